use super::*;

use sextant_core::{Endpoint, Protocol, Service};

use crate::translate::TranslateOptions;

fn view() -> MeshView {
    let mut web = Service::new("web.svc")
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(Endpoint::new("10.1.0.1".parse().expect("ip")).with_port("http", 8000));
    web.addresses.push("10.96.0.10".parse().expect("ip"));
    let mut db = Service::new("db.svc")
        .with_port("tcp", 5432, Protocol::Tcp)
        .with_endpoint(Endpoint::new("10.1.0.2".parse().expect("ip")));
    db.addresses.push("10.96.0.11".parse().expect("ip"));
    crate::translate::tests::view_of([web, db].map(|s| (s, Vec::new())), Vec::new())
}

#[test]
fn a_capture_set_has_the_layout_and_is_shared_by_alike_proxies() {
    let snap = Snapshot::empty(TranslateOptions::default()).next(Arc::new(view()));
    let cache = CaptureCache::default();
    let options = CaptureOptions::default();
    let web_pod: IpAddr = "10.1.0.1".parse().expect("ip");
    let set = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert_eq!(
        set.names(ResourceType::Listener),
        [
            Arc::from("0.0.0.0_80"),
            Arc::from("10.96.0.11_5432"),
            Arc::from("virtualInbound"),
            Arc::from("virtualOutbound"),
        ]
    );
    assert_eq!(set.names(ResourceType::Route), [Arc::from("80")]);
    assert_eq!(
        set.names(ResourceType::Cluster),
        [
            Arc::from("BlackHoleCluster"),
            Arc::from("InboundPassthroughCluster"),
            Arc::from("PassthroughCluster"),
            Arc::from("inbound|8000||"),
        ]
    );
    assert_eq!(set.inbound_ports.len(), 1);
    assert_eq!(set.inbound_ports[0].port, 8000, "the target port");

    // Another pod of web: the same set; a pod of nothing: no inbound port.
    let again = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert_eq!(*again, *set);
    assert!(Arc::ptr_eq(&again.outbound, &set.outbound));
    let stranger = cache.get(
        &snap,
        &options,
        None,
        &["10.9.9.9".parse().expect("ip")],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert!(stranger.inbound_ports.is_empty());
    assert!(Arc::ptr_eq(&stranger.outbound, &set.outbound));
    assert_ne!(stranger.digest, set.digest);

    // A Sidecar's ingress: its ports replace the endpoints', and the
    // inbound cluster delivers to its default endpoint.
    let ingress = [InboundPort {
        port: 9090,
        protocol: sextant_core::Protocol::Http,
        deliver: Some("127.0.0.1:8090".parse().expect("addr")),
    }];
    let sidecar = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &ingress,
    );
    assert_eq!(&*sidecar.inbound_ports, &ingress);
    let cluster = sidecar
        .inbound
        .get(ResourceType::Cluster, "inbound|9090||")
        .expect("the ingress port's cluster");
    let cluster = <envoy_types::pb::envoy::config::cluster::v3::Cluster as prost::Message>::decode(
        cluster.value().expect("value"),
    )
    .expect("a cluster");
    let endpoint = format!("{:?}", cluster.load_assignment);
    assert!(
        endpoint.contains("PortValue(8090)") && !endpoint.contains("PortValue(9090)"),
        "{endpoint}"
    );
    assert!(
        sidecar
            .inbound
            .get(ResourceType::Cluster, "inbound|8000||")
            .is_none()
    );

    // A newer topology: a new outbound set; a connection still on the
    // older snapshot gets its own without evicting the newer one.
    let mut changed = (**snap.view()).clone();
    changed.services.remove("db.svc");
    changed.generation = 2;
    let newer = snap.next(Arc::new(changed));
    let fresh = cache.get(
        &newer,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert!(!Arc::ptr_eq(&fresh.outbound, &set.outbound));
    assert!(
        fresh
            .get(ResourceType::Listener, "10.96.0.11_5432")
            .is_none()
    );
    let behind = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert!(
        behind
            .get(ResourceType::Listener, "10.96.0.11_5432")
            .is_some()
    );
    let again = cache.get(
        &newer,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert!(Arc::ptr_eq(&again.outbound, &fresh.outbound), "kept");
}

#[test]
fn a_service_on_the_proxys_own_port_gets_no_listener_that_would_clash() {
    let mut clash = Service::new("clash.svc").with_port("http", 15001, Protocol::Http);
    clash.addresses.push("10.96.0.30".parse().expect("ip"));
    let snap = Snapshot::empty(TranslateOptions::default()).next(Arc::new(
        crate::translate::tests::view_of([(clash, Vec::new())], Vec::new()),
    ));
    let set = CaptureCache::default().get(
        &snap,
        &CaptureOptions::default(),
        None,
        &[],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert!(set.get(ResourceType::Listener, "0.0.0.0_15001").is_none());
    assert_eq!(
        set.unreachable[..],
        ["clash.svc:15001 (the proxy's own port)".to_owned()]
    );
}

#[test]
fn a_proxy_with_a_workload_certificate_gets_its_own_clusters_and_inbound() {
    let snap = Snapshot::empty(TranslateOptions::default()).next(Arc::new(view()));
    let cache = CaptureCache::default();
    let options = CaptureOptions::default();
    let web_pod: IpAddr = "10.1.0.1".parse().expect("ip");
    let plain = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        false,
        &Default::default(),
        &Default::default(),
        &[],
    );
    let mesh = cache.get(
        &snap,
        &options,
        None,
        &[web_pod],
        true,
        &Default::default(),
        &Default::default(),
        &[],
    );
    assert_ne!(plain.digest, mesh.digest);
    // The plain proxy takes the snapshot's clusters; the mesh proxy gets
    // its own copies of them, under the same names.
    let web = "outbound|80||web.svc";
    assert!(plain.get(ResourceType::Cluster, web).is_none());
    let ours = mesh.get(ResourceType::Cluster, web).expect("the mesh copy");
    let any = <envoy_types::pb::google::protobuf::Any as prost::Message>::decode(ours.any.as_ref())
        .expect("any");
    let cluster = <envoy_types::pb::envoy::config::cluster::v3::Cluster as prost::Message>::decode(
        any.value.as_slice(),
    )
    .expect("cluster");
    assert_eq!(cluster.transport_socket_matches.len(), 2);
    assert_ne!(
        plain
            .get(ResourceType::Listener, layout::VIRTUAL_INBOUND)
            .map(|r| &r.version),
        mesh.get(ResourceType::Listener, layout::VIRTUAL_INBOUND)
            .map(|r| &r.version)
    );
    // Shared by alike proxies.
    assert!(Arc::ptr_eq(
        &mesh.outbound,
        &cache
            .get(
                &snap,
                &options,
                None,
                &[web_pod],
                true,
                &Default::default(),
                &Default::default(),
                &[],
            )
            .outbound
    ));
}
