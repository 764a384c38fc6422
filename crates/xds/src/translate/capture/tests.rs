use super::*;

use sextant_core::Service;

fn with_vip(mut s: Service, vip: &str) -> Service {
    s.addresses.push(vip.parse().expect("ip"));
    s
}

#[test]
fn ports_are_planned_by_protocol() {
    let view = super::super::tests::view_of(
        [
            with_vip(
                Service::new("web.svc").with_port("http", 80, Protocol::Http),
                "10.96.0.10",
            ),
            with_vip(
                Service::new("db.svc").with_port("tcp", 5432, Protocol::Tcp),
                "10.96.0.11",
            ),
            Service::new("cache.svc").with_port("tcp", 6379, Protocol::Tcp),
            Service::new("api.svc").with_port("tls", 443, Protocol::Tls),
        ]
        .map(|s| (s, Vec::new())),
        Vec::new(),
    );
    let db = &*view.services["db.svc"];
    let plan = PortPlan::of(view.services.values().map(|ms| &**ms));
    assert_eq!(plan.http.keys().collect::<Vec<_>>(), [&80]);
    assert_eq!(plan.tls[&443].len(), 1);
    assert_eq!(plan.tcp.len(), 1);
    assert_eq!(plan.unreachable, ["cache.svc:6379"]);

    let options = CaptureOptions::default();
    let l = port_listener(443, true, &plan.tls[&443], &options);
    assert_eq!(l.name, "0.0.0.0_443");
    assert_eq!(l.bind_to_port, Some(BoolValue { value: false }));
    assert_eq!(l.listener_filters.len(), 1, "tls_inspector");
    assert_eq!(l.filter_chains.len(), 2);
    let sni = l.filter_chains[0]
        .filter_chain_match
        .as_ref()
        .expect("match");
    assert_eq!(sni.server_names, ["api.svc"]);
    assert_eq!(
        l.default_filter_chain.as_ref().expect("default").name,
        PASSTHROUGH
    );
    let blocked = port_listener(
        80,
        true,
        &[],
        &CaptureOptions {
            outbound_policy: OutboundPolicy::Block,
            ..options.clone()
        },
    );
    assert!(blocked.listener_filters.is_empty());
    assert!(blocked.filter_chains[0].filter_chain_match.is_none());
    assert_eq!(
        blocked.default_filter_chain.as_ref().expect("default").name,
        BLACKHOLE
    );

    let mut notes = Vec::new();
    let table = port_route(80, &plan.http[&80], OutboundPolicy::Allow, &mut notes);
    assert_eq!(table.name, "80");
    assert_eq!(
        table.virtual_hosts[0].domains,
        ["web.svc", "web.svc:80", "10.96.0.10:80", "10.96.0.10"]
    );
    assert_eq!(table.virtual_hosts[1].name, "allow_any");

    let vip = vip_listener("10.96.0.11".parse().expect("ip"), 5432, db);
    assert_eq!(vip.name, "10.96.0.11_5432");
}

#[test]
fn inbound_has_a_chain_per_own_port_and_passes_the_rest_through() {
    let ports = [
        InboundPort {
            port: 8000,
            protocol: Protocol::Http,
            deliver: None,
        },
        InboundPort {
            port: 9000,
            protocol: Protocol::Tcp,
            deliver: None,
        },
    ];
    let l = virtual_inbound(
        &ports,
        &CaptureOptions::default(),
        false,
        &Default::default(),
        &[],
    );
    assert_eq!(l.name, VIRTUAL_INBOUND);
    assert_eq!(l.filter_chains.len(), 2);
    assert_eq!(l.filter_chains[0].name, "inbound|8000||");
    assert_eq!(
        l.default_filter_chain.as_ref().expect("default").name,
        INBOUND_PASSTHROUGH
    );
    assert_eq!(inbound_cluster(ports[0]).name, "inbound|8000||");
}

#[test]
fn inbound_chains_follow_the_mesh_mtls_mode() {
    use super::super::mtls::{PeerMode, with_client_identity};
    let ports = [
        InboundPort {
            port: 8000,
            protocol: Protocol::Http,
            deliver: None,
        },
        InboundPort {
            port: 9000,
            protocol: Protocol::Tcp,
            deliver: None,
        },
    ];
    let options = |mode| CaptureOptions {
        mtls: super::super::mtls::MtlsOptions {
            trust_domain: "example.org".into(),
            mode,
        },
        ..Default::default()
    };
    // Without a workload certificate: the plain layout, whatever the mode.
    let plain = virtual_inbound(
        &ports,
        &options(PeerMode::Strict),
        false,
        &Default::default(),
        &[],
    );
    assert_eq!(
        plain,
        virtual_inbound(
            &ports,
            &CaptureOptions::default(),
            false,
            &Default::default(),
            &[]
        )
    );

    // STRICT: one chain per port, every connection behind mutual TLS; no
    // inspection needed.
    let strict = virtual_inbound(
        &ports,
        &options(PeerMode::Strict),
        true,
        &Default::default(),
        &[],
    );
    assert_eq!(strict.filter_chains.len(), 2);
    for c in &strict.filter_chains {
        assert!(c.transport_socket.is_some(), "{}", c.name);
        let m = c.filter_chain_match.as_ref().expect("match");
        assert!(m.transport_protocol.is_empty() && m.application_protocols.is_empty());
    }
    assert_eq!(strict.listener_filters.len(), 1);

    // PERMISSIVE: mutual TLS for connections offering it with ALPN istio,
    // plaintext for the rest of the port; tls_inspector tells them apart.
    let permissive = virtual_inbound(
        &ports,
        &options(PeerMode::Permissive),
        true,
        &Default::default(),
        &[],
    );
    assert_eq!(permissive.filter_chains.len(), 4);
    let tls = &permissive.filter_chains[0];
    let m = tls.filter_chain_match.as_ref().expect("match");
    assert_eq!(m.transport_protocol, "tls");
    assert_eq!(m.application_protocols, ["istio"]);
    assert_eq!(m.destination_port.as_ref().expect("port").value, 8000);
    assert!(permissive.filter_chains[1].transport_socket.is_none());
    assert!(
        permissive
            .listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector")
    );
    assert!(permissive.continue_on_listener_filters_timeout);
    // The caller's identity reaches the application from the TLS chain
    // only: the plain chain's connection manager keeps the default, which
    // drops what a client sent.
    let hcm_of = |c: &FilterChain| {
        let f = &c.filters[0];
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            panic!("typed config")
        };
        <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()).expect("hcm")
    };
    let mut want = hcm_of(&permissive.filter_chains[1]);
    with_client_identity(&mut want);
    assert_eq!(hcm_of(tls), want);
    assert_eq!(
        hcm_of(&permissive.filter_chains[1]).forward_client_cert_details,
        0
    );

    // DISABLE: plaintext only.
    let disabled = virtual_inbound(
        &ports,
        &options(PeerMode::Disable),
        true,
        &Default::default(),
        &[],
    );
    assert_eq!(disabled.filter_chains, plain.filter_chains);
}

#[test]
fn a_workloads_peer_authentication_sets_its_ports_modes() {
    use super::super::mtls::PeerMode;
    use sextant_core::rules::{MtlsMode, PeerModes};
    let ports = [
        InboundPort {
            port: 8000,
            protocol: Protocol::Http,
            deliver: None,
        },
        InboundPort {
            port: 9000,
            protocol: Protocol::Tcp,
            deliver: None,
        },
    ];
    let options = CaptureOptions {
        mtls: super::super::mtls::MtlsOptions {
            trust_domain: "cluster.local".into(),
            mode: PeerMode::Permissive,
        },
        ..Default::default()
    };
    // The workload STRICT, its port 9000 DISABLE.
    let peer = PeerModes {
        mode: Some(MtlsMode::Strict),
        ports: [(9000, MtlsMode::Disable)].into(),
        from: vec!["shop/web".into()],
    };
    let l = virtual_inbound(&ports, &options, true, &peer, &[]);
    let names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["inbound|8000|||mtls", "inbound|9000||"]);
    assert!(l.filter_chains[1].transport_socket.is_none());
    // No port is PERMISSIVE: nothing to inspect.
    assert_eq!(l.listener_filters.len(), 1);
    // UNSET inherits the mesh's PERMISSIVE.
    let unset = PeerModes {
        mode: Some(MtlsMode::Unset),
        ..Default::default()
    };
    assert_eq!(
        virtual_inbound(&ports, &options, true, &unset, &[]),
        virtual_inbound(&ports, &options, true, &PeerModes::default(), &[])
    );
}

#[test]
fn authorization_policies_become_rbac_filters_per_port() {
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
    let ports = [
        InboundPort {
            port: 8000,
            protocol: Protocol::Http,
            deliver: None,
        },
        InboundPort {
            port: 9000,
            protocol: Protocol::Tcp,
            deliver: None,
        },
    ];
    let rule = |yaml: &str| {
        std::sync::Arc::new(sextant_core::Rule::from(
            serde_yaml_ng::from_str::<sextant_core::rules::AuthzEntry>(yaml).expect("policy"),
        ))
    };
    let policies = [
        // Deny namespace `evil` everywhere; deny POST /admin* on 8000.
        rule(
            "name: deny\nnamespace: shop\naction: DENY\nrules:\n- from: [{source: {namespaces: [evil]}}]\n- to: [{operation: {methods: [POST], paths: [/admin*]}}]\n",
        ),
        // Allow shop's own namespace, on port 8000 only.
        rule(
            "name: allow\nnamespace: shop\nrules:\n- from: [{source: {namespaces: [shop]}}]\n  to: [{operation: {ports: [\"8000\"]}}]\n",
        ),
    ];
    let l = virtual_inbound(
        &ports,
        &CaptureOptions::default(),
        false,
        &Default::default(),
        &policies,
    );
    // HTTP chain: DENY, ALLOW, router.
    let any = |c: &FilterChain, i: usize| match &c.filters[i].config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any.clone(),
        _ => panic!("typed"),
    };
    let hcm = <HttpConnectionManager as prost::Message>::decode(
        any(&l.filter_chains[0], 0).value.as_slice(),
    )
    .expect("hcm");
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.router"
        ]
    );
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
    let rbac_text: Vec<String> = hcm.http_filters[..2]
        .iter()
        .map(|f| match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => format!(
                "{:?}",
                <HttpRbac as prost::Message>::decode(any.value.as_slice()).expect("rbac")
            ),
            _ => panic!("typed"),
        })
        .collect();
    assert!(
        rbac_text[0].contains("/ns/evil/sa/") && rbac_text[0].contains("/admin"),
        "{}",
        rbac_text[0]
    );
    assert!(rbac_text[1].contains("/ns/shop/sa/"), "{}", rbac_text[1]);
    // TCP chain (9000): the DENY filter without its HTTP-only rule; the
    // ALLOW filter with no rule for this port refuses everything.
    let chain = &l.filter_chains[1];
    assert_eq!(chain.filters.len(), 3, "deny, allow, tcp proxy");
    let deny =
        <NetworkRbac as prost::Message>::decode(any(chain, 0).value.as_slice()).expect("rbac");
    let deny_text = format!("{deny:?}");
    assert!(deny_text.contains("/ns/evil/sa/"), "{deny_text}");
    assert!(
        !deny_text.contains("/admin"),
        "HTTP-only parts dropped on TCP: {deny_text}"
    );
    let allow =
        <NetworkRbac as prost::Message>::decode(any(chain, 1).value.as_slice()).expect("rbac");
    assert!(
        allow.rules.expect("rules").policies.is_empty(),
        "no ALLOW rule for port 9000: nothing is allowed there"
    );
    // Without policies, no RBAC at all; the same policies give the same bytes.
    let plain = virtual_inbound(
        &ports,
        &CaptureOptions::default(),
        false,
        &Default::default(),
        &[],
    );
    assert_eq!(plain.filter_chains[1].filters.len(), 1);
    assert_eq!(
        prost::Message::encode_to_vec(&l),
        prost::Message::encode_to_vec(&virtual_inbound(
            &ports,
            &CaptureOptions::default(),
            false,
            &Default::default(),
            &policies
        ))
    );
}
