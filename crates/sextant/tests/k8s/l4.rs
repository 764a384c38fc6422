//! The Gateway API's TCPRoute and TLSRoute (experimental channel,
//! `v1alpha2`) on Services, applied with kubectl to the API-server double,
//! steer a real Envoy's explicit TCP listeners (`--tcp-port-offset`): a
//! 90/10 split of connections measured, a TLS service's connections moved
//! to another Service, and the routes' status written.
//!
//! A module of the `k8s` test.

use super::*;

/// The condition `kind` of the first parent in a route's status.
fn condition(route: &serde_json::Value, kind: &str) -> String {
    route["status"]["parents"][0]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| format!("{}/{}", c["status"], c["reason"]))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applied_tcp_and_tls_routes_steer_envoy() {
    let double = KubeDouble::start().await;
    double.install(Crd::GatewayApi);
    let db = HttpBackend::start("db").await;
    let db_v2 = HttpBackend::start("db-v2").await;
    let edge = HttpBackend::start("edge").await;
    let edge_v2 = HttpBackend::start("edge-v2").await;
    service_on(&double, "shop", "db", ("tcp-db", 5432), &db);
    // The new versions on ports of their own: in explicit mode one port
    // is one listener for every service.
    service_on(&double, "shop", "db-v2", ("tcp-db", 5532), &db_v2);
    service_on(&double, "shop", "edge", ("tls", 8443), &edge);
    service_on(&double, "shop", "edge-v2", ("tls", 8543), &edge_v2);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    // The four listener ports (the services' ports moved by one offset),
    // free when chosen; the others away from where the next free ports
    // are picked (Sextant's own).
    let offset = loop {
        let first = u32::from(sextant_testkit::peers::free_port());
        let free = [100, 8443 - 5432, 8543 - 5432].iter().all(|d| {
            u16::try_from(first + d)
                .is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if free {
            break first - 5432;
        }
    };
    let sx = start(
        dir.path(),
        &kubeconfig,
        &["--tcp-port-offset", &offset.to_string()],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "k8s-l4", false).await).await;
    envoy.wait_live().await;
    let listener = |port: u32| {
        std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port + offset).expect("port")))
    };
    let (db_at, edge_at) = (listener(5432), listener(8443));
    let bound = Duration::from_secs(10);
    assert!(
        until_all(db_at, "db", "db", bound).await.is_some(),
        "{}",
        sx.log()
    );
    assert!(
        until_all(edge_at, "edge", "edge", bound).await.is_some(),
        "{}",
        sx.log()
    );

    let k = Kubectl::new(&double);
    for example_file in ["db-tcproute.yaml", "edge-tlsroute.yaml"] {
        k.apply(&example(example_file)).await;
    }
    // The TLS route: every connection to edge now reaches edge-v2.
    let took = until_all(edge_at, "edge", "edge-v2", bound).await;
    assert!(took.is_some(), "the TLSRoute is not in force: {}", sx.log());
    // The TCP route: 90/10 over 400 connections (each picks once). At
    // p = 0.9 the share lies within 0.84..0.96 but for odds of about one
    // in thirty thousand.
    let mut counts = tally(db_at, "db", 400).await;
    for _ in 0..100 {
        if counts.contains_key("db-v2") {
            break;
        }
        // Not in force yet when the count started: count again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        counts = tally(db_at, "db", 400).await;
    }
    let share = counts.get("db").copied().unwrap_or(0) as f64 / 400.0;
    eprintln!("90/10 TCPRoute: {counts:?}");
    assert!((0.84..=0.96).contains(&share), "{counts:?}\n{}", sx.log());

    // Status: accepted, every backend resolved.
    for (kind, name) in [("tcproute", "db-split"), ("tlsroute", "edge-to-v2")] {
        let mut seen = String::new();
        for _ in 0..100 {
            let (ok, out, _) = k
                .run(&["get", kind, name, "-n", "shop", "-o", "json"])
                .await;
            assert!(ok, "{out}");
            let route: serde_json::Value = serde_json::from_str(&out).expect("json");
            seen = format!(
                "{} {}",
                condition(&route, "Accepted"),
                condition(&route, "ResolvedRefs")
            );
            if seen == "\"True\"/\"Accepted\" \"True\"/\"ResolvedRefs\"" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            seen, "\"True\"/\"Accepted\" \"True\"/\"ResolvedRefs\"",
            "{kind} {name}"
        );
    }

    // Deleted: the connections go back to edge.
    let (ok, out, err) = k
        .run(&["delete", "-f", &example("edge-tlsroute.yaml")])
        .await;
    assert!(ok, "{out}{err}");
    assert!(
        until_all(edge_at, "edge", "edge", bound).await.is_some(),
        "{}",
        sx.log()
    );
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
