use super::*;
use proptest::prelude::*;
use sextant_core::{Endpoint, Health, Protocol, Service};

mod destinations;
mod exports;

fn svc(h: &str, port: u32, ips: &[&str]) -> Service {
    let mut s = Service::new(h).with_port("http", port, Protocol::Http);
    for ip in ips {
        s = s.with_endpoint(Endpoint::new(ip.parse().expect("addr")));
    }
    s
}

fn ids(n: usize) -> Vec<RegistryId> {
    (0..n)
        .map(|i| RegistryId::new(format!("memory/r{i}")))
        .collect()
}

fn state(mode: MergeMode, n: usize) -> MergeState {
    let mut st = MergeState::new(mode);
    for id in ids(n) {
        assert!(st.add_shard(id));
    }
    st
}

/// The content of a view without generations: what proxies would see.
fn content(view: &MeshView) -> BTreeMap<Hostname, (Service, Vec<RegistryId>)> {
    view.services
        .iter()
        .map(|(h, s)| (h.clone(), (s.service.clone(), s.origins.clone())))
        .collect()
}

fn addrs(view: &MeshView, h: &str) -> Vec<String> {
    view.services[h]
        .service
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect()
}

#[test]
fn union_merges_endpoints_and_first_takes_one_registry() {
    for (mode, want) in [
        (MergeMode::Union, vec!["10.0.0.1", "10.0.0.2"]),
        (MergeMode::First, vec!["10.0.0.1"]),
    ] {
        let mut st = state(mode, 2);
        let r = ids(2);
        st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
        st.apply(
            &r[1],
            Event::Reset(vec![svc("a.svc", 80, &["10.0.0.2", "10.0.0.1"])]),
        );
        let view = st.build_view(true).expect("view");
        assert_eq!(addrs(&view, "a.svc"), want, "{mode:?}");
        assert_eq!(view.services["a.svc"].origins, r, "{mode:?}");
        assert!(view.conflicts.is_empty());
    }
}

#[test]
fn port_disagreement_is_a_conflict_and_the_first_registry_defines_ports() {
    let mut st = state(MergeMode::Union, 2);
    let r = ids(2);
    st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
    let mut other = svc("a.svc", 8080, &["10.0.0.2"]);
    other.namespace = "shop".into();
    st.apply(&r[1], Event::Reset(vec![other]));
    let view = st.build_view(true).expect("view");
    let fields: Vec<_> = view
        .conflicts
        .iter()
        .map(|c| (c.field, c.other.clone()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (ConflictField::Ports, r[1].clone()),
            (ConflictField::Namespace, r[1].clone())
        ]
    );
    assert!(
        view.conflicts[0].detail.contains("http:80/HTTP"),
        "{}",
        view.conflicts[0].detail
    );
    assert_eq!(view.services["a.svc"].service.ports[0].port, 80);
    assert_eq!(view.services["a.svc"].service.namespace, "default");
    // The other registry's endpoint is matched by port name and keeps its own target port.
    let ep = &view.services["a.svc"].service.endpoints[1];
    assert_eq!(ep.ports["http"], 8080);

    // The conflict goes away with the disagreement.
    st.apply(&r[1], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.2"])]));
    let view = st.build_view(false).expect("view");
    assert!(view.conflicts.is_empty());
}

#[test]
fn endpoints_get_complete_target_ports() {
    let mut st = state(MergeMode::Union, 2);
    let r = ids(2);
    let mut a = svc("a.svc", 80, &["10.0.0.1"]).with_port("grpc", 90, Protocol::Grpc);
    a.endpoints[0].ports.insert("grpc".into(), 9090);
    // Registry 1 names its port differently but uses the same number: matched by number.
    let mut b = Service::new("a.svc").with_port("web", 80, Protocol::Http);
    b.endpoints
        .push(Endpoint::new("10.0.0.2".parse().expect("addr")).with_port("web", 8000));
    // Registry 1's endpoint on unrelated ports only: dropped, and said so.
    let c = Service::new("a.svc")
        .with_port("metrics", 9100, Protocol::Tcp)
        .with_port("admin", 9200, Protocol::Tcp);
    st.apply(&r[0], Event::Reset(vec![a]));
    st.apply(&r[1], Event::Reset(vec![b]));
    let view = st.build_view(true).expect("view");
    let eps = &view.services["a.svc"].service.endpoints;
    assert_eq!(
        eps[0].ports,
        BTreeMap::from([("http".into(), 80), ("grpc".into(), 9090)])
    );
    assert_eq!(eps[1].ports, BTreeMap::from([("http".into(), 8000)]));
    let mut st2 = state(MergeMode::Union, 2);
    st2.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &[])]));
    st2.apply(
        &r[1],
        Event::Reset(vec![
            c.with_endpoint(Endpoint::new("10.0.0.3".parse().expect("addr"))),
        ]),
    );
    let view = st2.build_view(true).expect("view");
    assert!(view.services["a.svc"].service.endpoints.is_empty());
    let dropped: Vec<_> = view
        .conflicts
        .iter()
        .filter(|c| c.field == ConflictField::DroppedEndpoints)
        .collect();
    assert_eq!(dropped.len(), 1, "{:?}", view.conflicts);
    assert_eq!(dropped[0].other, r[1]);
    assert_eq!(dropped[0].endpoints_dropped, 1);
    assert!(
        dropped[0].detail.contains("http:80") && dropped[0].detail.contains("metrics:9100"),
        "{}",
        dropped[0].detail
    );
}

/// The migration story: a Kubernetes Service port 80 (`http`) whose pods
/// listen on 8080, and a Consul service whose instances listen on 8080 on
/// VMs, under a port Consul names after its protocol (`tcp`).
#[test]
fn another_registrys_endpoint_maps_by_target_port_or_as_the_only_port() {
    let r = ids(2);
    let pod = Endpoint::new("10.1.0.1".parse().expect("addr")).with_port("http", 8080);
    let k8s = Service::new("web.svc")
        .with_port("http", 80, Protocol::Http)
        .with_port("metrics", 9100, Protocol::Tcp)
        .with_endpoint(pod.clone().with_port("metrics", 9100));
    let vm = |ip: &str, port: u32| Endpoint::new(ip.parse().expect("addr")).with_port("tcp", port);
    let consul = Service::new("web.svc")
        .with_port("tcp", 8080, Protocol::Tcp)
        .with_endpoint(vm("10.2.0.1", 8080))
        .with_endpoint(vm("10.2.0.2", 7000));
    let mut st = state(MergeMode::Union, 2);
    st.apply(&r[0], Event::Reset(vec![k8s.clone()]));
    st.apply(&r[1], Event::Reset(vec![consul.clone()]));
    let view = st.build_view(true).expect("view");
    let eps = &view.services["web.svc"].service.endpoints;
    // The VM on 8080 serves `http` (the pods' target port); the one on 7000
    // matches nothing (two winning ports, so not the only-port rule).
    assert_eq!(addrs(&view, "web.svc"), ["10.1.0.1", "10.2.0.1"]);
    assert_eq!(eps[1].ports, BTreeMap::from([("http".into(), 8080)]));
    let dropped = view
        .conflicts
        .iter()
        .find(|c| c.field == ConflictField::DroppedEndpoints)
        .expect("the unmapped VM is reported");
    assert_eq!(dropped.endpoints_dropped, 1);
    assert!(
        dropped.detail.contains("http:80 (target 8080)"),
        "{}",
        dropped.detail
    );

    // With one port on each side, any instance serves it, at its own port.
    let one_port = Service::new("web.svc")
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(pod);
    let mut st = state(MergeMode::Union, 2);
    st.apply(&r[0], Event::Reset(vec![one_port]));
    st.apply(&r[1], Event::Reset(vec![consul]));
    let view = st.build_view(true).expect("view");
    let eps = &view.services["web.svc"].service.endpoints;
    assert_eq!(
        addrs(&view, "web.svc"),
        ["10.1.0.1", "10.2.0.1", "10.2.0.2"]
    );
    assert_eq!(eps[2].ports, BTreeMap::from([("http".into(), 7000)]));
    assert!(
        view.conflicts
            .iter()
            .all(|c| c.field != ConflictField::DroppedEndpoints),
        "{:?}",
        view.conflicts
    );
}

#[test]
fn invalid_services_are_rejected_and_the_last_good_version_stays() {
    let mut st = state(MergeMode::Union, 1);
    let r = ids(1);
    st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
    st.build_view(true);
    let mut bad = svc("a.svc", 80, &["10.0.0.2"]);
    bad.endpoints[0].weight = 0;
    let rejected = st.apply(&r[0], Event::Apply(bad.clone()));
    assert_eq!(rejected.len(), 1);
    assert!(st.build_view(false).is_none(), "nothing changed");
    let rejected = st.apply(&r[0], Event::Reset(vec![bad, svc("b.svc", 80, &[])]));
    assert_eq!(rejected.len(), 1);
    let view = st.build_view(false).expect("b.svc added");
    assert_eq!(addrs(&view, "a.svc"), ["10.0.0.1"]);
    assert!(view.services.contains_key("b.svc"));
}

#[test]
fn generations_tell_endpoint_changes_from_config_changes() {
    let mut st = state(MergeMode::Union, 1);
    let r = ids(1);
    st.apply(
        &r[0],
        Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"]), svc("b.svc", 80, &[])]),
    );
    let v1 = st.build_view(true).expect("view");
    st.apply(&r[0], Event::Apply(svc("a.svc", 80, &["10.0.0.2"])));
    let v2 = st.build_view(false).expect("view");
    let a = &v2.services["a.svc"];
    assert_eq!((a.config_generation, a.endpoints_generation), (1, 2));
    assert!(
        Arc::ptr_eq(&v1.services["b.svc"], &v2.services["b.svc"]),
        "untouched service shared"
    );
    let mut relabelled = svc("a.svc", 80, &["10.0.0.2"]);
    relabelled.labels.insert("app".into(), "a".into());
    st.apply(&r[0], Event::Apply(relabelled));
    let v3 = st.build_view(false).expect("view");
    let a = &v3.services["a.svc"];
    assert_eq!((a.config_generation, a.endpoints_generation), (3, 2));
}

#[test]
fn clear_shard_keeps_priority_and_remove_shard_drops_it() {
    let mut st = state(MergeMode::First, 2);
    let r = ids(2);
    st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
    st.apply(&r[1], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.2"])]));
    st.build_view(true);
    st.clear_shard(&r[0]);
    let v = st.build_view(false).expect("view");
    assert_eq!(addrs(&v, "a.svc"), ["10.0.0.2"]);
    st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
    let v = st.build_view(false).expect("view");
    assert_eq!(addrs(&v, "a.svc"), ["10.0.0.1"], "r0 keeps its priority");
    st.remove_shard(&r[0]);
    let v = st.build_view(false).expect("view");
    assert_eq!(addrs(&v, "a.svc"), ["10.0.0.2"]);
}

// ---- properties ----

fn arb_service() -> impl Strategy<Value = Service> {
    (
        prop::sample::select(vec!["a.svc", "b.svc", "c.svc"]),
        prop::sample::select(vec![80u32, 81]),
        prop::collection::vec((1u8..5, prop::bool::ANY), 0..4),
    )
        .prop_map(|(h, port, eps)| {
            let mut s = Service::new(h).with_port("http", port, Protocol::Http);
            for (last, unhealthy) in eps {
                let mut e = Endpoint::new(format!("10.0.0.{last}").parse().expect("addr"));
                if unhealthy {
                    e.health = Health::Unhealthy;
                }
                s.endpoints.push(e);
            }
            s
        })
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => arb_service().prop_map(Event::Apply),
        1 => prop::sample::select(vec!["a.svc", "b.svc", "c.svc"]).prop_map(|h| Event::Delete(h.into())),
        1 => prop::collection::vec(arb_service(), 0..3).prop_map(Event::Reset),
    ]
}

fn arb_mode() -> impl Strategy<Value = MergeMode> {
    prop_oneof![Just(MergeMode::Union), Just(MergeMode::First)]
}

fn run(mode: MergeMode, n: usize, events: impl IntoIterator<Item = (usize, Event)>) -> MergeState {
    let r = ids(n);
    let mut st = state(mode, n);
    for (i, e) in events {
        st.apply(&r[i], e);
    }
    st
}

proptest! {
    #[test]
    fn any_interleaving_gives_the_same_view(
        mode in arb_mode(),
        per_registry in prop::collection::vec(prop::collection::vec(arb_event(), 0..8), 3),
        order in prop::collection::vec(0usize..3, 0..24),
    ) {
        let sequential = run(mode, 3, per_registry.iter().enumerate()
            .flat_map(|(i, evs)| evs.iter().cloned().map(move |e| (i, e))))
            .build_view(true).expect("view");
        // Interleave: take from the registry `order` names, then drain the rest.
        let mut queues: Vec<std::collections::VecDeque<Event>> =
            per_registry.iter().map(|v| v.iter().cloned().collect()).collect();
        let mut interleaved = Vec::new();
        for i in order.into_iter().chain(0..3).chain(0..3) {
            while let Some(e) = queues[i].pop_front() {
                interleaved.push((i, e));
                if interleaved.len() % 2 == 0 { break; }
            }
        }
        for (i, q) in queues.iter_mut().enumerate() {
            interleaved.extend(q.drain(..).map(|e| (i, e)));
        }
        // Publishing in between must not change the outcome either.
        let r = ids(3);
        let mut st = state(mode, 3);
        for (k, (i, e)) in interleaved.into_iter().enumerate() {
            st.apply(&r[i], e);
            if k % 3 == 0 { st.build_view(false); }
        }
        let mixed = st.build_view(true).expect("view");
        prop_assert_eq!(content(&sequential), content(&mixed));
        prop_assert_eq!(&sequential.conflicts[..], &mixed.conflicts[..]);
    }

    #[test]
    fn reset_is_idempotent(mode in arb_mode(), services in prop::collection::vec(arb_service(), 0..4)) {
        let mut st = state(mode, 1);
        let r = ids(1);
        st.apply(&r[0], Event::Reset(services.clone()));
        let first = st.build_view(true).expect("view");
        st.apply(&r[0], Event::Reset(services));
        prop_assert!(st.build_view(false).is_none(), "a repeated reset changes nothing");
        prop_assert_eq!(st.generation(), first.generation);
    }

    #[test]
    fn apply_then_delete_is_a_no_op(
        mode in arb_mode(),
        before in prop::collection::vec(arb_service(), 0..3),
        extra in arb_service(),
    ) {
        // `extra` uses a hostname nobody else has.
        let extra = Service { hostname: "new.svc".into(), ..extra };
        let mut st = state(mode, 2);
        let r = ids(2);
        st.apply(&r[0], Event::Reset(before));
        let v1 = st.build_view(true).expect("view");
        st.apply(&r[1], Event::Apply(extra.clone()));
        st.apply(&r[1], Event::Delete(extra.hostname.clone()));
        prop_assert!(st.build_view(false).is_none());
        prop_assert_eq!(content(&v1), content(&st.build_view(true).expect("view")));
    }

    #[test]
    fn removing_a_registry_removes_exactly_its_contribution(
        mode in arb_mode(),
        a in prop::collection::vec(arb_event(), 0..8),
        b in prop::collection::vec(arb_event(), 0..8),
    ) {
        let only_a = run(mode, 1, a.iter().cloned().map(|e| (0, e))).build_view(true).expect("view");
        let mut both = run(mode, 2, a.into_iter().map(|e| (0, e)).chain(b.into_iter().map(|e| (1, e))));
        both.build_view(true);
        both.remove_shard(&ids(2)[1]);
        let after = both.build_view(true).expect("view");
        let strip = |v: &MeshView| content(v);
        prop_assert_eq!(strip(&only_a), strip(&after));
        prop_assert!(after.conflicts.is_empty());
    }
}

/// A route rule over `hosts` whose one route is named `note` (what tests
/// compare).
fn rule(name: &str, hosts: &[&str], note: &str) -> sextant_core::Rule {
    use sextant_core::rules::{Destination, HttpRoute, RouteDestination};
    sextant_core::Rule::route(
        "default",
        name,
        sextant_core::RouteRule {
            hosts: hosts.iter().map(|h| Hostname::new(*h)).collect(),
            http: vec![HttpRoute {
                name: Some(note.into()),
                route: vec![RouteDestination {
                    destination: Destination::host(hosts[0]),
                    weight: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn note(ms: &sextant_core::MeshService) -> Option<String> {
    ms.route_rule().and_then(|(_, r)| r.http[0].name.clone())
}

fn route_key(name: &str) -> sextant_core::RuleKey {
    sextant_core::RuleKey::new(sextant_core::RuleKind::Route, "default", name)
}

/// One route rule per host: the first source wins, then the first name;
/// every loser is a conflict. A rule that fails validation is refused and
/// the last good version keeps serving.
#[test]
fn rule_conflicts_are_recorded_and_invalid_rules_refused() {
    let mut st = state(MergeMode::Union, 1);
    let r = ids(1);
    let (first, second) = (RegistryId::new("file/a"), RegistryId::new("etcd/b"));
    assert!(st.add_rule_shard(first.clone()));
    assert!(st.add_rule_shard(second.clone()));
    st.apply(&r[0], Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]));
    st.apply_rules(
        &second,
        Event::Reset(vec![rule("aa", &["a.svc"], "second")]),
    );
    st.apply_rules(
        &first,
        Event::Reset(vec![
            rule("zz", &["a.svc"], "first-zz"),
            rule("mm", &["a.svc"], "first-mm"),
        ]),
    );
    let v = st.build_view(true).expect("view");
    assert_eq!(note(&v.services["a.svc"]).as_deref(), Some("first-mm"));
    let mut seen: Vec<(String, ConflictField)> = v
        .conflicts
        .iter()
        .map(|c| (c.other.to_string(), c.field))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("etcd/b".to_owned(), ConflictField::RouteRule),
            ("file/a".to_owned(), ConflictField::RouteRule),
        ]
    );
    assert!(
        v.conflicts
            .iter()
            .any(|c| c.detail.contains("route default/zz"))
    );

    // A broken version of the winner is refused; the good one serves on.
    let mut broken = rule("mm", &["a.svc"], "broken");
    if let sextant_core::RuleSpec::Route(r) = &mut broken.spec {
        r.http[0].route[0].weight = Some(50);
        let again = r.http[0].route[0].clone();
        r.http[0].route.push(again);
        r.http[0].route[1].weight = Some(10);
    }
    let rejected = st.apply_rules(&first, Event::Apply(broken.clone()));
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].to_string().contains("weights sum to 60"),
        "{}",
        rejected[0]
    );
    let rejected = st.apply_rules(
        &first,
        Event::Reset(vec![rule("zz", &["a.svc"], "first-zz"), broken]),
    );
    assert_eq!(rejected.len(), 1);
    let v = st.build_view(true).expect("view");
    assert_eq!(note(&v.services["a.svc"]).as_deref(), Some("first-mm"));

    // The winner deleted: the next in line takes over, conflicts shrink.
    st.apply_rules(&first, Event::Delete(route_key("mm")));
    st.apply_rules(&first, Event::Delete(route_key("zz")));
    let v = st.build_view(false).expect("changed");
    assert_eq!(note(&v.services["a.svc"]).as_deref(), Some("second"));
    assert!(v.conflicts.is_empty(), "{:?}", v.conflicts);
}

/// Rules attach to the services they bind to, and a rule change moves the
/// configuration generation of exactly those services (so the xDS layer
/// translates exactly them again).
#[test]
fn rules_attach_to_their_hosts_and_move_only_their_config_generation() {
    let mut st = state(MergeMode::Union, 1);
    let r = ids(1);
    let rules = RegistryId::new("memory/rules");
    assert!(st.add_rule_shard(rules.clone()));
    assert!(!st.add_rule_shard(rules.clone()), "one shard per id");
    st.apply(
        &r[0],
        Event::Reset(vec![
            svc("a.svc", 80, &["10.0.0.1"]),
            svc("b.svc", 80, &["10.0.0.2"]),
        ]),
    );
    let v1 = st.build_view(true).expect("view");
    let config_gen = |v: &MeshView, h: &str| v.services[h].config_generation;

    st.apply_rules(
        &rules,
        Event::Reset(vec![rule("split", &["a.svc", "missing.svc"], "v1")]),
    );
    let v2 = st.build_view(false).expect("a changed");
    assert_eq!(v2.services["a.svc"].rules.len(), 1);
    assert!(v2.services["b.svc"].rules.is_empty());
    assert!(config_gen(&v2, "a.svc") > config_gen(&v1, "a.svc"));
    assert_eq!(
        config_gen(&v2, "b.svc"),
        config_gen(&v1, "b.svc"),
        "b is not touched"
    );
    assert!(
        !v2.services.contains_key("missing.svc"),
        "a rule makes no service"
    );

    // The same rule again changes nothing; moved to b, both move.
    st.apply_rules(
        &rules,
        Event::Apply(rule("split", &["a.svc", "missing.svc"], "v1")),
    );
    assert!(st.build_view(false).is_none());
    st.apply_rules(&rules, Event::Apply(rule("split", &["b.svc"], "v2")));
    let v3 = st.build_view(false).expect("moved");
    assert!(v3.services["a.svc"].rules.is_empty());
    assert_eq!(note(&v3.services["b.svc"]).as_deref(), Some("v2"));
    assert!(
        config_gen(&v3, "a.svc") > config_gen(&v2, "a.svc")
            && config_gen(&v3, "b.svc") > config_gen(&v2, "b.svc")
    );
    assert_eq!(
        v3.services["a.svc"].endpoints_generation, v2.services["a.svc"].endpoints_generation,
        "endpoints did not change"
    );

    // Deleted, or the source cleared: the rule leaves its service.
    st.apply_rules(&rules, Event::Delete(route_key("split")));
    let v4 = st.build_view(false).expect("deleted");
    assert!(v4.services["b.svc"].rules.is_empty());
    st.apply_rules(&rules, Event::Apply(rule("other", &["a.svc"], "x")));
    st.build_view(false).expect("added");
    st.clear_shard(&rules);
    let v5 = st.build_view(false).expect("cleared");
    assert!(v5.services["a.svc"].rules.is_empty());
}

/// A rule of either kind, named `name`, over `hosts` (a route rule's one
/// route names `tag`).
fn any_rule(route: bool, name: &str, hosts: &[&str], tag: &str) -> sextant_core::Rule {
    if route {
        rule(name, hosts, tag)
    } else {
        sextant_core::Rule::policy(
            "default",
            name,
            sextant_core::DestinationPolicy {
                host: Hostname::new(hosts[0]),
                traffic_policy: None,
                subsets: vec![sextant_core::rules::Subset {
                    name: tag.to_owned(),
                    labels: Default::default(),
                    traffic_policy: None,
                }],
                export_to: Vec::new(),
            },
        )
    }
}

const RULE_HOSTS: [&str; 3] = ["a.svc", "b.svc", "c.svc"];

prop_compose! {
    /// (route?, name, hosts, tag): names and hosts from small sets, so that
    /// rules collide.
    fn arb_rule()(
        route in any::<bool>(),
        name in 0usize..4,
        first in 0usize..3,
        second in proptest::option::of(0usize..3),
        tag in 0usize..3,
    ) -> sextant_core::Rule {
        let mut hosts = vec![RULE_HOSTS[first]];
        if let Some(s) = second && route && s != first {
            hosts.push(RULE_HOSTS[s]);
        }
        any_rule(route, &format!("r{name}"), &hosts, &format!("v{tag}"))
    }
}

proptest! {
    /// Whatever the rules and the order their sources report them in: each
    /// service has at most one rule of each kind, the one of the first
    /// source naming it, the first by name within that source; every other
    /// rule naming it is a conflict of the right kind; and sending each
    /// source's rules one Apply at a time gives the view a Reset gives.
    #[test]
    fn rules_resolve_the_same_whatever_the_order(
        per_source in prop::collection::vec(prop::collection::vec(arb_rule(), 0..6), 2),
        order in prop::collection::vec(0usize..2, 0..12),
    ) {
        let sources = [RegistryId::new("file/first"), RegistryId::new("etcd/second")];
        let build = |reset: bool| {
            let mut st = state(MergeMode::Union, 1);
            for s in &sources {
                st.add_rule_shard(s.clone());
            }
            st.apply(&ids(1)[0], Event::Reset(RULE_HOSTS.iter().map(|h| svc(h, 80, &["10.0.0.1"])).collect()));
            if reset {
                for (s, rules) in sources.iter().zip(&per_source) {
                    st.apply_rules(s, Event::Reset(rules.clone()));
                }
            } else {
                for s in &sources {
                    st.apply_rules(s, Event::Reset(Vec::new()));
                }
                let mut next = [0usize; 2];
                let mut steps: Vec<usize> = order.clone();
                steps.extend([0, 1].iter().flat_map(|&i| std::iter::repeat_n(i, per_source[i].len())));
                for i in steps {
                    if let Some(r) = per_source[i].get(next[i]) {
                        st.apply_rules(&sources[i], Event::Apply(r.clone()));
                        next[i] += 1;
                    }
                }
            }
            st.build_view(true).expect("view")
        };
        let by_reset = build(true);
        let by_apply = build(false);

        // Within one source a later rule with the same key replaces the
        // earlier one, as a Reset does.
        let last: Vec<BTreeMap<sextant_core::RuleKey, &sextant_core::Rule>> = per_source
            .iter()
            .map(|rules| rules.iter().map(|r| (r.key.clone(), r)).collect())
            .collect();
        for view in [&by_reset, &by_apply] {
            for host in RULE_HOSTS {
                let ms = &view.services[host];
                for kind in [sextant_core::RuleKind::Route, sextant_core::RuleKind::Policy] {
                    let naming: Vec<(usize, &sextant_core::Rule)> = last
                        .iter()
                        .enumerate()
                        .flat_map(|(i, m)| m.values().map(move |r| (i, *r)))
                        .filter(|(_, r)| r.key.kind == kind && r.hosts.iter().any(|h| h.as_str() == host))
                        .collect();
                    let in_force: Vec<_> = ms.rules.iter().filter(|r| r.key.kind == kind).collect();
                    prop_assert!(in_force.len() <= 1);
                    match naming.first() {
                        None => prop_assert!(in_force.is_empty()),
                        Some((_, want)) => prop_assert_eq!(&**in_force[0], *want),
                    }
                    let field = match kind {
                        sextant_core::RuleKind::Route => ConflictField::RouteRule,
                        _ => ConflictField::DestinationPolicy,
                    };
                    let conflicts = view
                        .conflicts
                        .iter()
                        .filter(|c| c.hostname.as_str() == host && c.field == field)
                        .count();
                    prop_assert_eq!(conflicts, naming.len().saturating_sub(1));
                }
            }
        }
        let rules_of = |v: &MeshView| -> Vec<(Hostname, Vec<sextant_core::Rule>)> {
            v.services.iter().map(|(h, s)| (h.clone(), s.rules.iter().map(|r| (**r).clone()).collect())).collect()
        };
        prop_assert_eq!(rules_of(&by_reset), rules_of(&by_apply));
        prop_assert_eq!(by_reset.conflicts.len(), by_apply.conflicts.len());
    }
}

fn scope_rule(ns: &str, name: &str, hosts: &[&str]) -> sextant_core::Rule {
    sextant_core::Rule::scope(
        ns,
        name,
        sextant_core::ScopeRule {
            workload_selector: Default::default(),
            hosts: hosts
                .iter()
                .map(|h| sextant_core::ScopeHost::parse(h).expect("host"))
                .collect(),
            outbound: None,
            ingress: Vec::new(),
        },
    )
}

#[test]
fn scope_rules_are_published_in_precedence_order_without_touching_services() {
    let mut st = state(MergeMode::Union, 1);
    st.apply(
        &ids(1)[0],
        Event::Reset(vec![svc("a.svc", 80, &["10.0.0.1"])]),
    );
    let (first, second) = (RegistryId::new("memory/a"), RegistryId::new("memory/b"));
    assert!(st.add_rule_shard(first.clone()));
    assert!(st.add_rule_shard(second.clone()));
    let v1 = st.build_view(true).expect("view");
    assert!(v1.scopes.is_empty());

    st.apply_rules(&second, Event::Apply(scope_rule("shop", "a", &["./*"])));
    st.apply_rules(&first, Event::Apply(scope_rule("shop", "z", &["*/*"])));
    let v2 = st.build_view(false).expect("a scope change is a new view");
    let names: Vec<_> = v2.scopes.iter().map(|r| r.key.name.as_str()).collect();
    assert_eq!(names, ["z", "a"], "the first source's rules come first");
    assert!(v2.changes_since(&v1).is_empty(), "no service changed");
    assert!(Arc::ptr_eq(&v2.services["a.svc"], &v1.services["a.svc"]));

    // The same rule again changes nothing; an unrelated service change
    // keeps the same list.
    st.apply_rules(&first, Event::Apply(scope_rule("shop", "z", &["*/*"])));
    assert!(st.build_view(false).is_none());
    st.apply(&ids(1)[0], Event::Apply(svc("b.svc", 80, &[])));
    let v3 = st.build_view(false).expect("view");
    assert!(Arc::ptr_eq(&v3.scopes, &v2.scopes));

    // Removed by Delete, by Reset and with a cleared source.
    st.apply_rules(
        &first,
        Event::Delete(sextant_core::RuleKey::new(
            sextant_core::RuleKind::Scope,
            "shop",
            "z",
        )),
    );
    assert_eq!(st.build_view(false).expect("view").scopes.len(), 1);
    st.clear_shard(&second);
    assert!(st.build_view(false).expect("view").scopes.is_empty());
    assert_eq!(st.rule_counts(&first), (0, 0, 0));
}
