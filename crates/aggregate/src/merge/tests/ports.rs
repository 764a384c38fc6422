//! The single port of a route's destination travels with the route:
//! Istio's rule that a single-port service needs no port in a destination.

use super::*;

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
