//! Proxyless gRPC workloads in the mesh, with their agents' certificate
//! files: a real grpcio client and server over the mesh's mutual TLS.
//!
//! A module of the `agent` test.

use super::*;

/// Proxyless gRPC in the mesh: two `--proxyless` agents (no Envoy) hold
/// workload certificates for `web` and `echo`; grpcio serves `echo` over TLS
/// that requires a client certificate (the echo agent's files), and a grpcio
/// client with xDS credentials, bootstrapped by the web agent's file, calls
/// it through Sextant. Without a rule the client has no TLS settings and the
/// server refuses it; once a DestinationRule says ISTIO_MUTUAL (written to
/// the registry file while everything runs) the client dials mutual TLS with
/// the agent's files, checks the server's SPIFFE id against the trust
/// domain, and the server sees the client's identity: on every one of 21
/// calls, not only the first. The service then names the identity its
/// instances must prove (`identities`): another one, and the client refuses
/// the server's certificate; the server's own service account, and the
/// calls go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyless_grpc_calls_over_mutual_tls_with_the_agents_files() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = |p: &Path| p.to_str().expect("path").to_owned();
    // gRPC reads its bearer token as a JWT (its expiry); the token file
    // maps the whole string, so two signatures make two identities.
    let jwt = |sig: &str| {
        format!(
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIiLCJleHAiOjQxMDI0NDQ4MDB9.{sig}"
        )
    };
    let (web_token, echo_token) = (jwt("d2Vi"), jwt("ZWNobw"));
    std::fs::write(
        d.join("tokens"),
        format!("{web_token} shop web\n{echo_token} shop echo\n"),
    )
    .expect("tokens");
    std::fs::write(d.join("web-token"), &web_token).expect("token");
    std::fs::write(d.join("echo-token"), &echo_token).expect("token");
    let server_port = free_port();
    let service = format!(
        "services:\n  - hostname: echo.shop.svc\n    namespace: shop\n    ports: [{{ name: grpc, port: 50051, protocol: GRPC }}]\n    endpoints:\n      - {{ address: 127.0.0.1, ports: {{ grpc: {server_port} }}, labels: {{ app: echo, security.istio.io/tlsMode: istio }} }}\n"
    );
    let mesh_file = d.join("mesh.yaml");
    std::fs::write(&mesh_file, &service).expect("write mesh");
    let ca_dir = d.join("ca");
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _sx = Sextant::start(
        d,
        &[
            "--file",
            &p(&mesh_file),
            "--xds-tls-addr",
            &tls.to_string(),
            "--ca-dir",
            &p(&ca_dir),
            "--xds-token-file",
            &p(&d.join("tokens")),
        ],
    )
    .await;
    let root = p(&ca_dir.join("root-cert.pem"));
    let agent = |app: &str| {
        let home = d.join(app);
        std::fs::create_dir_all(&home).expect("mkdir");
        let token = p(&d.join(format!("{app}-token")));
        Agent::start_as(
            &home,
            tls,
            "5s",
            &["--proxyless", "--xds-ca", &root, "--token-file", &token],
            app,
        )
    };
    let (web, echo) = (agent("web"), agent("echo"));
    web.until_ready(200).await;
    echo.until_ready(200).await;
    let bootstrap = web.proxy_dir.join("grpc-bootstrap.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bootstrap).expect("the gRPC bootstrap"))
            .expect("json");
    assert_eq!(
        written["node"]["metadata"]["WORKLOAD_CERTS"], "files",
        "{written}"
    );
    assert!(
        !web.proxy_dir.join("envoy.yaml").exists() && !web.proxy_dir.join("sds.sock").exists(),
        "no Envoy, no SDS"
    );

    let mut child = Command::new(sextant_testkit::peers::python_path())
        .arg(
            sextant_testkit::peers::workspace_root()
                .join("crates/sextant/tests/clients/grpc_mtls.py"),
        )
        .arg(server_port.to_string())
        .arg(echo.proxy_dir.join("certs"))
        .arg("echo.shop.svc:50051")
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .env("GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run grpc_mtls.py");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = Lines(tokio::io::AsyncBufReadExt::lines(
        tokio::io::BufReader::new(child.stdout.take().expect("stdout")),
    ));
    out.next(Duration::from_secs(20), "the server").await;

    // No rule: no TLS settings for the client; the server takes no plaintext.
    stdin.write_all(b"refused\n").await.expect("stdin");
    let refused = out.next(Duration::from_secs(20), "the refused calls").await;
    assert!(
        refused["refused"].as_u64().is_some_and(|n| n > 0),
        "{refused}"
    );
    // Refused by the server (the client reached its address through
    // xDS), not for want of configuration.
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("127.0.0.1:{server_port}"))
            && !error.contains("empty address list"),
        "the client dialled the server: {refused}"
    );

    // ISTIO_MUTUAL, while everything runs.
    std::fs::write(
        &mesh_file,
        format!(
            "{service}policies:\n  - name: echo\n    host: echo.shop.svc\n    trafficPolicy: {{ tls: {{ mode: ISTIO_MUTUAL }} }}\n"
        ),
    )
    .expect("write mesh");
    stdin.write_all(b"mtls\n").await.expect("stdin");
    let served = out
        .next(Duration::from_secs(40), "the mutual TLS calls")
        .await;
    assert_eq!(
        served["peer"],
        serde_json::json!(["spiffe://cluster.local/ns/shop/sa/web"]),
        "{served}"
    );
    assert_eq!(served["calls"], 21, "{served}");
    // A guard against a stall hidden behind eventual success (typically
    // well under a second: the file's reload, one push, one handshake).
    let seconds = served["seconds"].as_f64().expect("seconds");
    assert!(seconds < 10.0, "{served}");
    eprintln!("first mutual TLS call {seconds} s after the rule was written");

    // The service names who its instances must be: someone else, and the
    // client refuses the server's certificate; its own service account,
    // and the calls go through again.
    let policy = "policies:\n  - name: echo\n    host: echo.shop.svc\n    trafficPolicy: { tls: { mode: ISTIO_MUTUAL } }\n";
    let with_identity = |account: &str| {
        service.replacen(
            "    namespace: shop\n",
            &format!("    namespace: shop\n    identities: {{ serviceAccounts: [{account}] }}\n"),
            1,
        )
    };
    std::fs::write(&mesh_file, format!("{}{policy}", with_identity("imposter"))).expect("write");
    stdin.write_all(b"denied\n").await.expect("stdin");
    let denied = out.next(Duration::from_secs(40), "the denied calls").await;
    assert!(denied["seconds"].is_number(), "{denied}");
    eprintln!(
        "the client refused the server's identity {} s after the file was written: {}",
        denied["seconds"], denied["error"]
    );
    std::fs::write(&mesh_file, format!("{}{policy}", with_identity("echo"))).expect("write");
    stdin.write_all(b"mtls\n").await.expect("stdin");
    let served = out.next(Duration::from_secs(40), "the calls to echo").await;
    assert_eq!(served["calls"], 21, "{served}");
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
