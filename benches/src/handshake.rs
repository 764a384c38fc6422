//! What the mesh's mutual TLS costs per new connection between two
//! sidecars (`loadgen handshake`).
//!
//! Two real Envoys on loopback, a client and a server, configured with the
//! TLS settings Sextant gives sidecars (`sextant_xds::translate::mtls`): the
//! client dials with its workload certificate, ALPN `istio` and Istio's SNI,
//! and checks the server's certificate against the root and the trust
//! domain; the server requires a client certificate from the mesh. The
//! certificates are issued by Sextant's CA (P-256 keys, as the agent makes
//! them). Certificates come from files here rather than SDS: where Envoy
//! reads them from changes nothing in a handshake.
//!
//! Three paths through the same two Envoys, each a TCP proxy to an echo
//! server: plaintext, mutual TLS as sidecars get it (Envoy resumes TLS
//! sessions: after the first, a new connection's handshake is abbreviated),
//! and mutual TLS with resumption off (every handshake a full one, what a
//! rotation or a new peer costs). Each connection: connect to the client
//! Envoy, send 4 bytes, read their echo, close. Blocks of `connections` per
//! path, the paths in turn, `rounds` times; the figures are per path over
//! every block: latency p50/p99 and both Envoys' CPU per connection (from
//! /proc), with the ratio to plaintext measured in the same run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use sextant_testkit::peers::Envoy;

use crate::loadgen::cpu_seconds;

/// `loadgen handshake` settings.
#[derive(clap::Args, Debug)]
pub struct HandshakeArgs {
    /// Connections per block.
    #[arg(long, default_value_t = 500)]
    pub connections: usize,
    /// Blocks per path.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    sextant_testkit::peers::free_port()
}

/// A workload's certificate chain and key files in `dir`, issued by `ca`.
fn workload(ca: &sextant_ca::Authority, dir: &std::path::Path, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let id =
        sextant_ca::Identity::from_spiffe(&format!("spiffe://cluster.local/ns/bench/sa/{name}"))
            .expect("identity");
    let issued = ca.issue(&csr, &id, None).expect("issue");
    let chain = dir.join(format!("{name}-chain.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&chain, issued.chain.concat()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    (chain.display().to_string(), key_file.display().to_string())
}

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn listener(name: &str, port: u16, cluster: &str, tls: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{ "@type": "{TCP_PROXY}", stat_prefix: {name}, cluster: {cluster} }}
{tls}"#
    )
}

fn cluster(name: &str, port: u16, tls: &str) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
{tls}"#
    )
}

fn bootstrap(listeners: &[String], clusters: &[String]) -> String {
    format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}\nstatic_resources:\n  listeners:\n{}  clusters:\n{}",
        listeners.concat(),
        clusters.concat()
    )
}

/// The common TLS settings of a sidecar: its certificate, peers checked
/// against the root and the trust domain; `indent` is the field's.
fn common(indent: &str, chain: &str, key: &str, root: &str, alpn: &str) -> String {
    [
        "common_tls_context:".to_owned(),
        format!("  alpn_protocols: [{alpn}]"),
        format!(
            "  tls_certificates: [{{ certificate_chain: {{ filename: {chain} }}, private_key: {{ filename: {key} }} }}]"
        ),
        "  validation_context:".to_owned(),
        format!("    trusted_ca: {{ filename: {root} }}"),
        r#"    match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: "spiffe://cluster.local/" } }]"#.to_owned(),
    ]
    .iter()
    .map(|l| format!("{indent}{l}\n"))
    .collect()
}

/// One path's figures.
#[derive(Debug, Default)]
struct PathFigures {
    latencies: Vec<Duration>,
    cpu: f64,
    failures: usize,
}

impl PathFigures {
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

async fn one_connection(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .map_err(|_| "no echo within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if &buf != b"ping" {
        return Err(format!("echo {buf:?}"));
    }
    Ok(started.elapsed())
}

/// Runs the benchmark; prints a table on stderr and JSON on stdout.
pub async fn run(args: &HandshakeArgs) -> i32 {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = sextant_ca::Authority::open(
        &dir.path().join("ca"),
        "cluster.local",
        Duration::from_secs(3600),
    )
    .expect("CA");
    let root = dir.path().join("ca/root-cert.pem").display().to_string();
    let (client_chain, client_key) = workload(&ca, dir.path(), "client");
    let (server_chain, server_key) = workload(&ca, dir.path(), "server");
    let echo = echo_server().await;

    let (s_plain, s_tls) = (free_port(), free_port());
    let downstream = format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
{}"#,
        common("          ", &server_chain, &server_key, &root, "")
    );
    let server = Envoy::start(&bootstrap(
        &[
            listener("plain", s_plain, "echo", ""),
            listener("mtls", s_tls, "echo", &downstream),
        ],
        &[cluster("echo", echo.port(), "")],
    ))
    .await;

    let upstream = |max_session_keys: Option<u32>| {
        format!(
            r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.9000_._.echo.bench.svc.cluster.local
{}{}"#,
            common("        ", &client_chain, &client_key, &root, "istio"),
            max_session_keys.map_or(String::new(), |n| format!(
                "        max_session_keys: {n}\n"
            ))
        )
    };
    let paths = [
        ("plaintext", free_port()),
        ("mtls", free_port()),
        ("mtls-full", free_port()),
    ];
    let client = Envoy::start(&bootstrap(
        &[
            listener("plaintext", paths[0].1, "plain", ""),
            listener("mtls", paths[1].1, "mtls", ""),
            listener("mtls-full", paths[2].1, "mtls_full", ""),
        ],
        &[
            cluster("plain", s_plain, ""),
            cluster("mtls", s_tls, &upstream(None)),
            cluster("mtls_full", s_tls, &upstream(Some(0))),
        ],
    ))
    .await;
    let pids = [
        client.pid().expect("client pid"),
        server.pid().expect("server pid"),
    ];
    let cpu = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();

    // Every path answers before anything is measured.
    for (name, port) in paths {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut last = String::new();
        let ready = 'wait: {
            for _ in 0..100 {
                match one_connection(addr).await {
                    Ok(_) => break 'wait true,
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        if !ready {
            eprintln!(
                "{name} never answered: {last}\nclient:\n{}\nserver:\n{}",
                client.log(),
                server.log()
            );
            return 1;
        }
    }

    let mut figures: Vec<PathFigures> = paths.iter().map(|_| PathFigures::default()).collect();
    for _ in 0..args.rounds {
        for (i, (_, port)) in paths.iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let before = cpu();
            for _ in 0..args.connections {
                match one_connection(addr).await {
                    Ok(d) => figures[i].latencies.push(d),
                    Err(_) => figures[i].failures += 1,
                }
            }
            figures[i].cpu += cpu() - before;
        }
    }
    let (_, stats) = sextant_testkit::peers::http_get(client.admin, "localhost", "/stats")
        .await
        .unwrap_or_default();
    let handshakes = |stat: &str| {
        stats
            .lines()
            .find(|l| l.starts_with(stat))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let full = handshakes("cluster.mtls_full.ssl.handshake:");
    let resumed_path = handshakes("cluster.mtls.ssl.handshake:");
    let resumed = handshakes("cluster.mtls.ssl.session_reused:");

    let n = (args.connections * args.rounds) as f64;
    let mut rows = Vec::new();
    let plain_p50 = figures[0].percentile(0.5).as_secs_f64();
    let plain_cpu = figures[0].cpu / n;
    eprintln!(
        "{:<10} {:>10} {:>10} {:>14} {:>9} {:>9} {:>9}",
        "path", "p50 ms", "p99 ms", "CPU us/conn", "p50 x", "CPU x", "failures"
    );
    for ((name, _), f) in paths.iter().zip(figures.iter_mut()) {
        let (p50, p99) = (f.percentile(0.5), f.percentile(0.99));
        let cpu_per = f.cpu / n;
        eprintln!(
            "{:<10} {:>10.3} {:>10.3} {:>14.1} {:>9.2} {:>9.2} {:>9}",
            name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            cpu_per * 1e6,
            p50.as_secs_f64() / plain_p50,
            cpu_per / plain_cpu.max(1e-9),
            f.failures
        );
        rows.push(serde_json::json!({
            "path": name,
            "p50_ms": p50.as_secs_f64() * 1e3,
            "p99_ms": p99.as_secs_f64() * 1e3,
            "cpu_us_per_connection": cpu_per * 1e6,
            "p50_ratio": p50.as_secs_f64() / plain_p50,
            "cpu_ratio": cpu_per / plain_cpu.max(1e-9),
            "failures": f.failures,
        }));
    }
    eprintln!(
        "client Envoy: mtls {resumed_path} handshakes ({resumed} resumed sessions), mtls-full {full} handshakes"
    );
    println!(
        "{}",
        serde_json::json!({
            "connections_per_path": n,
            "paths": rows,
            "mtls_handshakes": resumed_path,
            "mtls_sessions_reused": resumed,
            "mtls_full_handshakes": full,
        })
    );
    i32::from(figures.iter().any(|f| f.failures > 0))
}
