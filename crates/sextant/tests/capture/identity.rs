//! Who an upstream must be: a ServiceEntry's `subjectAltNames` and its
//! endpoints' `serviceAccount`, enforced by the client's sidecar in mutual
//! TLS. The server pod proves `spiffe://cluster.local/ns/test/sa/server`
//! (its certificate from Sextant's CA). An entry expecting another
//! identity is refused by the client's proxy before a byte reaches the
//! server; the entry fixed to name the server's service account while
//! everything runs, the same request goes through.
//!
//! A module of the `capture` test.

use super::*;

fn entry(identity: &str) -> String {
    format!(
        "serviceEntries:
  - name: api
    namespace: test
    hosts: [api.internal.test]
    addresses: [10.96.0.50]
    location: MESH_INTERNAL
    resolution: STATIC
    ports: [{{ number: 80, name: http, protocol: HTTP }}]
{identity}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_must_prove_the_identity_its_entry_names() {
    let mut m = MeshPods::new(&[]).await;
    let (client_ns, server_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    let mesh = std::fs::read_to_string(m.path("mesh.yaml")).expect("mesh");
    let endpoint = |account: &str| {
        format!(
            "    endpoints:
      - {{ address: {BACKEND_A}, ports: {{ http: 8090 }}, labels: {{ security.istio.io/tlsMode: istio }}{account} }}
"
        )
    };
    let imposter = format!(
        "    subjectAltNames: [spiffe://cluster.local/ns/test/sa/imposter]\n{}",
        endpoint("")
    );
    std::fs::write(m.path("mesh.yaml"), format!("{mesh}{}", entry(&imposter))).expect("write");
    m.start_pod(&server_ns, "server", BACKEND_A, "8090,9000")
        .await;
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;
    let identity = "URI=spiffe://cluster.local/ns/test/sa/client";

    // The server is not who the entry names: refused by the client's
    // proxy (the mesh's other services, which name no identity, work).
    let (ok, body) = app_curl(&client_ns, &["http://10.96.0.10/"]).await;
    assert!(ok && body.contains(identity), "{body:?}\n{}", m.logs());
    let (_, body) = app_curl(&client_ns, &["http://10.96.0.50/"]).await;
    assert!(!body.contains("xfcc="), "{body:?}");
    assert!(
        stat(
            &client_ns,
            "cluster.outbound|80||api.internal.test.ssl.fail_verify_san"
        )
        .await
            >= 1,
        "the client's proxy refused the server's certificate\n{}",
        m.logs()
    );

    // The endpoint's service account: the identity the server proves.
    std::fs::write(
        m.path("mesh.yaml"),
        format!("{mesh}{}", entry(&endpoint(", serviceAccount: server"))),
    )
    .expect("write");
    let took = until(
        "the server's identity accepted",
        Duration::from_secs(15),
        || {
            let client_ns = client_ns.clone();
            async move {
                app_curl(&client_ns, &["http://10.96.0.50/"])
                    .await
                    .1
                    .contains(identity)
            }
        },
    )
    .await;
    eprintln!(
        "the entry's identity reached the client's proxy {took:?} after the file was written"
    );
}
