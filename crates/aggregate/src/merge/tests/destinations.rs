//! What a route takes from the hosts it sends to travels with it: their
//! policies (a ring-hash key) and their single ports (Istio's rule that a
//! single-port service needs no port in a destination).

use super::*;

/// A route rule of host a that sends to b carries b's policy with it (its
/// ring-hash key goes into a's routes): a change to b's policy is a
/// configuration change of a too, and of no other service.
#[test]
fn a_routes_destination_policy_travels_with_it() {
    let mut st = state(MergeMode::Union, 1);
    let src = RegistryId::new("memory/rules");
    st.add_rule_shard(src.clone());
    st.apply(
        &ids(1)[0],
        Event::Reset(vec![
            svc("a.svc", 80, &["10.0.0.1"]),
            svc("b.svc", 80, &["10.0.0.2"]),
            svc("c.svc", 80, &["10.0.0.3"]),
        ]),
    );
    let to_b: sextant_core::Rule = serde_yaml_ng::from_str::<sextant_core::RouteEntry>(
        "name: a\nhosts: [a.svc]\nhttp: [{route: [{destination: {host: b.svc}}]}]",
    )
    .expect("route")
    .into();
    let policy = |n: &str| -> sextant_core::Rule {
        serde_yaml_ng::from_str::<sextant_core::PolicyEntry>(&format!(
            "name: b\nhost: b.svc\ntrafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: {n}}}}}}}"
        ))
        .expect("policy")
        .into()
    };
    st.apply_rules(&src, Event::Reset(vec![to_b, policy("x-user")]));
    let v1 = st.build_view(true).expect("view");
    assert_eq!(v1.services["a.svc"].destination_policies.len(), 1);
    assert!(v1.services["b.svc"].destination_policies.is_empty());

    st.apply_rules(&src, Event::Apply(policy("x-tenant")));
    let v2 = st.build_view(false).expect("changed");
    let moved = |h: &str| v2.services[h].config_generation > v1.services[h].config_generation;
    assert!(moved("a.svc") && moved("b.svc") && !moved("c.svc"));
    assert_eq!(
        v2.changes_since(&v1),
        vec![
            ("a.svc".into(), sextant_core::Change::Config),
            ("b.svc".into(), sextant_core::Change::Config)
        ]
    );

    st.apply_rules(
        &src,
        Event::Delete(sextant_core::RuleKey::new(
            sextant_core::RuleKind::Policy,
            "default",
            "b",
        )),
    );
    let v3 = st.build_view(false).expect("changed");
    assert!(v3.services["a.svc"].destination_policies.is_empty());
}

#[test]
fn a_destinations_single_port_travels_with_the_route_and_follows_it() {
    let mut st = state(MergeMode::Union, 1);
    let src = RegistryId::new("memory/rules");
    st.add_rule_shard(src.clone());
    let reg = ids(1)[0].clone();
    st.apply(
        &reg,
        Event::Reset(vec![
            svc("front.svc", 80, &["10.0.0.1"]),
            svc("back.svc", 9090, &["10.0.0.2"]),
            svc("other.svc", 70, &["10.0.0.3"]),
        ]),
    );
    let to_back: sextant_core::Rule = serde_yaml_ng::from_str::<sextant_core::RouteEntry>(
        "name: front\nhosts: [front.svc]\nhttp: [{route: [{destination: {host: back.svc}}]}]",
    )
    .expect("route")
    .into();
    st.apply_rules(&src, Event::Reset(vec![to_back]));
    let v1 = st.build_view(true).expect("view");
    assert_eq!(
        v1.services["front.svc"].destination_ports,
        [("back.svc".into(), 9090)].into()
    );
    assert!(v1.services["back.svc"].destination_ports.is_empty());

    // back's port moves: front's configuration moves with it, other's not.
    st.apply(&reg, Event::Apply(svc("back.svc", 9091, &["10.0.0.2"])));
    let v2 = st.build_view(false).expect("changed");
    assert_eq!(
        v2.services["front.svc"].destination_ports,
        [("back.svc".into(), 9091)].into()
    );
    let moved = |h: &str| v2.services[h].config_generation > v1.services[h].config_generation;
    assert!(moved("front.svc") && moved("back.svc") && !moved("other.svc"));

    // An endpoint change of back is not a change of front.
    st.apply(&reg, Event::Apply(svc("back.svc", 9091, &["10.0.0.9"])));
    let v3 = st.build_view(false).expect("changed");
    assert_eq!(
        v3.services["front.svc"].config_generation,
        v2.services["front.svc"].config_generation
    );

    // Two ports: no single port to go to (a destination must name one).
    let mut two = svc("back.svc", 9091, &["10.0.0.9"]);
    two.ports.push(sextant_core::ServicePort::new("grpc", 9092));
    st.apply(&reg, Event::Apply(two));
    let v4 = st.build_view(false).expect("changed");
    assert!(v4.services["front.svc"].destination_ports.is_empty());

    // Gone, and back again.
    st.apply(&reg, Event::Delete("back.svc".into()));
    let v5 = st.build_view(false).expect("changed");
    assert!(v5.services["front.svc"].destination_ports.is_empty());
    st.apply(&reg, Event::Apply(svc("back.svc", 9093, &["10.0.0.2"])));
    let v6 = st.build_view(false).expect("changed");
    assert_eq!(
        v6.services["front.svc"].destination_ports,
        [("back.svc".into(), 9093)].into()
    );
}
