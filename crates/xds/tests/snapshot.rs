//! Incremental snapshots: what is re-encoded, what is marked changed, and
//! that versions depend on content only.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Event, Health, RegistryId};
use sextant_testkit::fixtures;
use sextant_xds::resource::ResourceType;
use sextant_xds::snapshot::Snapshot;
use sextant_xds::translate::TranslateOptions;

fn names(s: &Snapshot, kind: ResourceType) -> Vec<String> {
    s.resources(kind)
        .changed
        .iter()
        .map(|n| n.to_string())
        .collect()
}

struct Mesh {
    merge: MergeState,
    id: RegistryId,
}

impl Mesh {
    fn new(services: usize, endpoints: usize) -> Mesh {
        let id = RegistryId::new("memory/a");
        let mut merge = MergeState::new(MergeMode::Union);
        merge.add_shard(id.clone());
        merge.apply(&id, Event::Reset(fixtures::mesh(services, endpoints)));
        Mesh { merge, id }
    }
    fn view(&mut self) -> Arc<sextant_core::MeshView> {
        Arc::new(self.merge.build_view(true).expect("view"))
    }
}

#[test]
fn an_endpoint_change_re_encodes_one_assignment() {
    let mut mesh = Mesh::new(100, 10);
    let s1 = Snapshot::empty(TranslateOptions::default()).next(mesh.view());
    assert_eq!(s1.resources(ResourceType::Cluster).resources.len(), 100);
    assert_eq!(s1.resources(ResourceType::Endpoint).resources.len(), 100);

    let mut svc = fixtures::mesh(100, 10).remove(7);
    svc.endpoints[3].health = Health::Unhealthy;
    mesh.merge.apply(&mesh.id, Event::Apply(svc));
    let s2 = s1.next(mesh.view());
    assert_eq!(s2.encoded, 1, "only the one assignment is encoded");
    assert_eq!(
        names(&s2, ResourceType::Endpoint),
        ["outbound|8080||svc-7.mesh.svc"]
    );
    for kind in [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        assert!(names(&s2, kind).is_empty(), "{kind} untouched");
    }
    // Untouched resources are the very same allocation.
    let a = s1
        .get(ResourceType::Endpoint, "outbound|8080||svc-8.mesh.svc")
        .expect("r");
    let b = s2
        .get(ResourceType::Endpoint, "outbound|8080||svc-8.mesh.svc")
        .expect("r");
    assert!(Arc::ptr_eq(a, b));
}

#[test]
fn adding_and_removing_services_touches_their_resources_and_the_route_table() {
    let mut mesh = Mesh::new(3, 2);
    let s1 = Snapshot::empty(TranslateOptions::default()).next(mesh.view());
    mesh.merge
        .apply(&mesh.id, Event::Delete("svc-1.mesh.svc".into()));
    let s2 = s1.next(mesh.view());
    assert_eq!(
        names(&s2, ResourceType::Cluster),
        ["outbound|8080||svc-1.mesh.svc"]
    );
    assert_eq!(
        names(&s2, ResourceType::Endpoint),
        ["outbound|8080||svc-1.mesh.svc"]
    );
    assert_eq!(names(&s2, ResourceType::Route), ["outbound_http"]);
    assert!(
        s2.get(ResourceType::Cluster, "outbound|8080||svc-1.mesh.svc")
            .is_none()
    );
    assert!(
        names(&s2, ResourceType::Listener).is_empty(),
        "the listener itself did not change"
    );
}

#[test]
fn versions_depend_on_content_only() {
    // Two replicas, built independently, and a rebuild after a restart.
    let a = Snapshot::empty(TranslateOptions::default()).next(Mesh::new(20, 5).view());
    let b = Snapshot::empty(TranslateOptions::default()).next(Mesh::new(20, 5).view());
    for kind in ResourceType::ALL {
        let va: Vec<_> = a
            .resources(kind)
            .resources
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let vb: Vec<_> = b
            .resources(kind)
            .resources
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        assert_eq!(va, vb, "{kind}");
        // A snapshot holds no secrets (a router's lens adds its own).
        assert_eq!(va.is_empty(), kind == ResourceType::Secret, "{kind}");
    }
}

/// A rule change is a configuration change of exactly the services it binds
/// to: the snapshot translates those again (as many resources as any other
/// configuration change of that one service) and shares every other
/// service's resources with the previous snapshot.
#[test]
fn a_rule_change_re_translates_only_the_services_it_binds_to() {
    use sextant_core::{DestinationPolicy, Rule};
    let mut mesh = Mesh::new(100, 10);
    let rules = RegistryId::new("memory/rules");
    mesh.merge.add_rule_shard(rules.clone());
    let s1 = Snapshot::empty(TranslateOptions::default()).next(mesh.view());

    mesh.merge.apply_rules(
        &rules,
        Event::Apply(Rule::policy(
            "mesh",
            "r",
            DestinationPolicy {
                host: "svc-7.mesh.svc".into(),
                traffic_policy: None,
                subsets: Vec::new(),
                export_to: Vec::new(),
            },
        )),
    );
    let s2 = s1.next(mesh.view());

    // The same service with another label: a configuration change too.
    let mut other = Mesh::new(100, 10);
    let o1 = Snapshot::empty(TranslateOptions::default()).next(other.view());
    let mut svc = fixtures::mesh(100, 10).remove(7);
    svc.labels.insert("touched".into(), "yes".into());
    other.merge.apply(&other.id, Event::Apply(svc));
    let o2 = o1.next(other.view());

    assert!(s2.encoded > 0, "svc-7 was translated again");
    assert_eq!(s2.encoded, o2.encoded, "as for any config change of svc-7");
    let untouched = "outbound|8080||svc-8.mesh.svc";
    for kind in [ResourceType::Cluster, ResourceType::Endpoint] {
        assert!(Arc::ptr_eq(
            s1.get(kind, untouched).expect("in s1"),
            s2.get(kind, untouched).expect("in s2")
        ));
    }
}

/// A destination policy changes the settings of the service's clusters (a
/// new version, listed as changed) and adds its subset clusters.
#[test]
fn a_policy_changes_the_services_clusters_and_adds_subsets() {
    use sextant_core::{PolicyEntry, Rule};
    let mut mesh = Mesh::new(10, 4);
    let rules = RegistryId::new("memory/rules");
    mesh.merge.add_rule_shard(rules.clone());
    let s1 = Snapshot::empty(TranslateOptions::default()).next(mesh.view());
    let policy: PolicyEntry = serde_yaml_ng::from_str(
        "name: p\nhost: svc-3.mesh.svc\ntrafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}\nsubsets: [{name: v1, labels: {version: v1}}]\n",
    )
    .expect("policy");
    assert!(
        mesh.merge
            .apply_rules(&rules, Event::Apply(Rule::from(policy)))
            .is_empty()
    );
    let s2 = s1.next(mesh.view());
    let plain = "outbound|8080||svc-3.mesh.svc";
    let changed = &s2.resources(ResourceType::Cluster).changed;
    assert!(changed.iter().any(|n| &**n == plain), "{changed:?}");
    assert_ne!(
        s1.get(ResourceType::Cluster, plain).expect("s1").version,
        s2.get(ResourceType::Cluster, plain).expect("s2").version
    );
    assert!(
        s2.get(ResourceType::Cluster, "outbound|8080|v1|svc-3.mesh.svc")
            .is_some()
    );
    assert!(
        s2.get(ResourceType::Endpoint, "outbound|8080|v1|svc-3.mesh.svc")
            .is_some()
    );
}

#[test]
fn tcp_listeners_follow_tcp_ports_with_the_first_host_winning_a_port() {
    use sextant_core::{Protocol, Service};
    let tcp = |host: &str, port: u32| Service::new(host).with_port("db", port, Protocol::Tcp);
    let id = RegistryId::new("memory/a");
    let mut merge = MergeState::new(MergeMode::Union);
    merge.add_shard(id.clone());
    merge.apply(
        &id,
        Event::Reset(vec![
            tcp("a.svc", 5432),
            tcp("b.svc", 5432),
            tcp("c.svc", 6379),
        ]),
    );
    let options = TranslateOptions {
        tcp_port_offset: Some(10_000),
        ..Default::default()
    };
    let view = |m: &mut MergeState| Arc::new(m.build_view(true).expect("view"));
    let s1 = Snapshot::empty(options.clone()).next(view(&mut merge));
    let listeners = |s: &Snapshot| -> Vec<String> {
        s.resources(ResourceType::Listener)
            .resources
            .keys()
            .filter(|n| n.starts_with("outbound_tcp_"))
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(listeners(&s1), ["outbound_tcp_15432", "outbound_tcp_16379"]);
    assert_eq!(s1.tcp_conflicts(), ["b.svc:5432"]);
    // a.svc leaves: b.svc takes the port; c.svc's listener is untouched.
    merge.apply(&id, Event::Delete(sextant_core::Hostname::new("a.svc")));
    let s2 = s1.next(view(&mut merge));
    assert_eq!(listeners(&s2), ["outbound_tcp_15432", "outbound_tcp_16379"]);
    assert!(s2.tcp_conflicts().is_empty());
    assert!(names(&s2, ResourceType::Listener).contains(&"outbound_tcp_15432".to_owned()));
    assert!(!names(&s2, ResourceType::Listener).contains(&"outbound_tcp_16379".to_owned()));
    // c.svc leaves: its listener goes.
    merge.apply(&id, Event::Delete(sextant_core::Hostname::new("c.svc")));
    let s3 = s2.next(view(&mut merge));
    assert_eq!(listeners(&s3), ["outbound_tcp_15432"]);
    // Without an offset, none.
    let plain = Snapshot::empty(TranslateOptions::default()).next(view(&mut merge));
    assert!(listeners(&plain).is_empty());
    // A port that would land on the outbound HTTP listener's (15001) is a
    // conflict, not a listener Envoy would reject with it.
    merge.apply(&id, Event::Apply(tcp("d.svc", 5001)));
    let clash = Snapshot::empty(options).next(view(&mut merge));
    assert_eq!(listeners(&clash), ["outbound_tcp_15432"]);
    assert_eq!(clash.tcp_conflicts(), ["d.svc:5001"]);
}
