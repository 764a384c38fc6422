//! Istio's Sidecar `ingress`, for real: the server pod's application
//! listens on 8090 (loopback only), and a service sends to the pod's port
//! 9090. Without a Sidecar nothing answers there; a scope rule with an
//! ingress listener for 9090 whose default endpoint is 127.0.0.1:8090,
//! written into the file while everything runs, has the server's proxy
//! deliver that traffic to the application, in mutual TLS from the
//! client's proxy. The listener for 8090 with no default endpoint keeps
//! the other service working (ingress listeners replace the ports found
//! from the endpoints).
//!
//! A module of the `capture` test.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_ingress_listener_delivers_to_its_default_endpoint() {
    let mut m = MeshPods::new(&[]).await;
    let (client_ns, server_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    let api = format!(
        "  - hostname: api.test.svc
    namespace: test
    addresses: [10.96.0.40]
    ports: [{{ name: http, port: 80, protocol: HTTP }}]
    endpoints:
      - address: {BACKEND_A}
        ports: {{ http: 9090 }}
        labels: {{ app: server, security.istio.io/tlsMode: istio }}
"
    );
    let mesh = std::fs::read_to_string(m.path("mesh.yaml")).expect("mesh");
    let mesh = format!("{mesh}{api}");
    std::fs::write(m.path("mesh.yaml"), &mesh).expect("write");
    m.start_pod(&server_ns, "server", BACKEND_A, "8090,9000,9090")
        .await;
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;
    let identity = "URI=spiffe://cluster.local/ns/test/sa/client";

    // Nothing listens on the pod's 9090.
    let (_, body) = app_curl(&client_ns, &["http://10.96.0.40/"]).await;
    assert!(!body.contains(identity), "{body:?}");

    std::fs::write(
        m.path("mesh.yaml"),
        format!(
            "{mesh}scopes:
  - name: server
    namespace: test
    workloadSelector: {{ labels: {{ app: server }} }}
    ingress:
      - port: {{ number: 9090, protocol: HTTP, name: http-api }}
        defaultEndpoint: 127.0.0.1:8090
      - port: {{ number: 8090, protocol: HTTP, name: http }}
"
        ),
    )
    .expect("write");
    let took = until("the ingress listener", Duration::from_secs(15), || {
        let client_ns = client_ns.clone();
        async move {
            app_curl(&client_ns, &["http://10.96.0.40/"])
                .await
                .1
                .contains(identity)
        }
    })
    .await;
    eprintln!("the Sidecar's ingress listener took {took:?}");
    for _ in 0..5 {
        let (ok, body) = app_curl(&client_ns, &["http://10.96.0.40/"]).await;
        assert!(ok && body.contains(identity), "{body:?}\n{}", m.logs());
    }
    assert!(
        stat(&server_ns, "cluster.inbound|9090||.upstream_rq_total").await >= 5,
        "delivered through the 9090 listener's cluster"
    );
    let (ok, body) = app_curl(&client_ns, &["http://10.96.0.10/"]).await;
    assert!(
        ok && body.contains(identity),
        "the 8090 listener: {body:?}\n{}",
        m.logs()
    );
}
