//! `sextant agent` with a real Envoy (the venv's 1.40) and the real
//! `sextant` binary serving it: the bootstrap carries the pod, readiness
//! waits for Sextant's configuration, a killed Envoy comes back, and a stop
//! drains within one deadline, ending as soon as the last connection does.
//! Waits are bounded guards against hangs; the few measured durations are
//! compared with bounds far from what they guard against (stated at each).
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sextant_testkit::peers::{
    Behaviour, HttpBackend, envoy_path, free_port, http_get, kill_processes_with_arg,
};
use tokio::process::{Child, Command};

mod common;

use common::*;

/// A running agent.
struct Agent {
    child: Child,
    status: SocketAddr,
    proxy_dir: std::path::PathBuf,
}

impl Drop for Agent {
    /// The agent is killed when dropped; the Envoy it started would be
    /// left running (in a pod, the container's end takes it), so it goes
    /// too.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        kill_processes_with_arg(&self.proxy_dir.join("envoy.yaml").display().to_string());
    }
}

impl Agent {
    /// Starts `sextant agent` for a pod `web-1` in `shop`, explicit mode,
    /// pointed at `xds`.
    fn start(dir: &Path, xds: SocketAddr, deadline: &str) -> Agent {
        Agent::start_with(dir, xds, deadline, &[])
    }

    /// As [`Agent::start`], with more arguments.
    fn start_with(dir: &Path, xds: SocketAddr, deadline: &str, extra: &[&str]) -> Agent {
        Agent::start_as(dir, xds, deadline, extra, "web")
    }

    /// As [`Agent::start_with`], for a pod `APP-1` of service account and
    /// app `app`.
    fn start_as(dir: &Path, xds: SocketAddr, deadline: &str, extra: &[&str], app: &str) -> Agent {
        let status = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pod = dir.join("pod");
        std::fs::create_dir_all(&pod).expect("mkdir");
        std::fs::write(
            pod.join("labels"),
            format!("app=\"{app}\"\nversion=\"v1\"\n"),
        )
        .expect("labels");
        let log = std::fs::File::create(dir.join("agent.log")).expect("log");
        let child = Command::new(BIN)
            .arg("agent")
            .args(["--xds-addr", &xds.to_string()])
            .arg("--envoy-path")
            .arg(envoy_path())
            .args(["--envoy-admin-port", "0", "--concurrency", "1"])
            .args(["--status-addr", &status.to_string()])
            .arg("--proxy-dir")
            .arg(dir.join("proxy"))
            .arg("--pod-info-dir")
            .arg(&pod)
            .args(if extra.contains(&"--mode") {
                &[][..]
            } else {
                &["--mode", "explicit"][..]
            })
            .args(["--drain-deadline", deadline])
            .args(["--proxy-log-level", "info"])
            .args(extra)
            .env("POD_NAME", format!("{app}-1"))
            .env("POD_NAMESPACE", "shop")
            .env("INSTANCE_IP", "127.0.0.1")
            .env("SERVICE_ACCOUNT", app)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the agent");
        Agent {
            child,
            status,
            proxy_dir: dir.join("proxy"),
        }
    }

    async fn ready(&self) -> (u16, String) {
        http_get(self.status, "localhost", "/healthz/ready")
            .await
            .unwrap_or((0, "no answer".into()))
    }

    /// Polls readiness until it answers `want` (bounded, 30 s).
    async fn until_ready(&self, want: u16) -> String {
        let mut last = (0, String::new());
        for _ in 0..300 {
            last = self.ready().await;
            if last.0 == want {
                return last.1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("readiness never answered {want}; last {last:?}");
    }

    /// Envoy's process id, from the agent.
    async fn envoy_pid(&self) -> u32 {
        let (status, body) = http_get(self.status, "localhost", "/proxy")
            .await
            .expect("/proxy");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        u32::try_from(v["pid"].as_u64().expect("pid")).expect("pid")
    }

    async fn signal(&self, signal: &str, pid: u32) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .await
            .expect("kill");
        assert!(ok.success());
    }

    async fn sigterm(&self) {
        self.signal("TERM", self.child.id().expect("pid")).await;
    }

    /// Waits for the agent to exit (bounded); its exit code and when.
    async fn exited(&mut self, bound: Duration) -> (i32, Instant) {
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .expect("the agent exits")
            .expect("wait");
        (status.code().unwrap_or(-1), Instant::now())
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

/// A backend, Sextant serving it on a chosen xDS port, and the mesh file.
async fn mesh_with(backend: &HttpBackend, dir: &Path, xds: SocketAddr) -> Sextant {
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, mesh(&[backend])).expect("write");
    Sextant::start(
        dir,
        &[
            "--file",
            file.to_str().expect("path"),
            "--xds-addr",
            &xds.to_string(),
        ],
    )
    .await
}

/// Readiness answers 503 while Envoy has no configuration (Sextant not up
/// yet) and 200 once Envoy accepted clusters and listeners; the proxy Sextant
/// sees carries the pod's namespace, labels and IP; traffic flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_configuration_and_the_bootstrap_carries_the_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web-backend").await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start(dir.path(), xds, "10s");
    // Envoy runs, but nothing answers on the xDS port.
    let why = agent.until_ready(503).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _) = agent.ready().await;
    assert_eq!(status, 503, "ready without any configuration ({why})");

    let sx = mesh_with(&backend, dir.path(), xds).await;
    let started = Instant::now();
    agent.until_ready(200).await;
    eprintln!("ready {:?} after Sextant started", started.elapsed());

    let syncz = sx.json("/debug/syncz").await;
    let node = syncz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["node_id"] == "sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local")
        .unwrap_or_else(|| panic!("the agent's Envoy is not connected: {syncz}"));
    assert_eq!(node["identity"]["namespace"], "shop");
    assert_eq!(node["identity"]["labels"]["app"], "web");
    assert_eq!(node["identity"]["ips"][0], "127.0.0.1");
    assert_eq!(node["identity"]["mode"], "explicit");
    assert!(
        until_body(sx.outbound, "web.test.svc", &[], "web-backend").await,
        "no traffic through the agent's Envoy\n{}",
        log(dir.path())
    );
}

/// Envoy killed with SIGKILL: readiness fails, the agent starts it again
/// (after a second), readiness and traffic come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_envoy_is_restarted_and_traffic_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web-backend").await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sx = mesh_with(&backend, dir.path(), xds).await;
    let agent = Agent::start(dir.path(), xds, "10s");
    agent.until_ready(200).await;
    assert!(until_body(sx.outbound, "web.test.svc", &[], "web-backend").await);
    let first = agent.envoy_pid().await;
    agent.signal("KILL", first).await;
    agent.until_ready(503).await;
    agent.until_ready(200).await;
    let second = agent.envoy_pid().await;
    assert_ne!(first, second, "a new Envoy");
    assert!(
        until_body(sx.outbound, "web.test.svc", &[], "web-backend").await,
        "no traffic after the restart\n{}",
        log(dir.path())
    );
    assert!(log(dir.path()).contains("Envoy exited unexpectedly; restarting it"));
}

/// SIGTERM with a request in flight (the backend takes 3 s): the request
/// completes, and the agent exits 0 as soon as its connection closed, far
/// before the 30 s deadline (bound: 3 s after the response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_long_request_finish_then_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start_with(
        "slow-backend",
        Behaviour {
            delay: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sx = mesh_with(&backend, dir.path(), xds).await;
    let mut agent = Agent::start(dir.path(), xds, "30s");
    agent.until_ready(200).await;
    let outbound = sx.outbound;
    let request = tokio::spawn(async move {
        let r = sextant_testkit::peers::http_request(outbound, "web.test.svc", "/", &[])
            .await
            .expect("the request in flight completes");
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term = Instant::now();
    agent.sigterm().await;
    let (response, answered) = request.await.expect("request task");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "slow-backend");
    let (code, exited) = agent.exited(Duration::from_secs(40)).await;
    assert_eq!(code, 0, "{}", log(dir.path()));
    let after_response = exited.saturating_duration_since(answered);
    eprintln!(
        "exited {:?} after SIGTERM, {after_response:?} after the last response",
        exited - term
    );
    assert!(
        after_response < Duration::from_secs(3),
        "the agent waited {after_response:?} after the last connection\n{}",
        log(dir.path())
    );
    assert!(log(dir.path()).contains("no connection left"));
}

/// A request that never finishes (the backend answers after a minute):
/// the agent stops Envoy at the drain deadline (3 s) and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_closes_ends_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start_with(
        "stuck-backend",
        Behaviour {
            delay: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sx = mesh_with(&backend, dir.path(), xds).await;
    let mut agent = Agent::start(dir.path(), xds, "3s");
    agent.until_ready(200).await;
    let outbound = sx.outbound;
    let stuck = tokio::spawn(async move {
        let _ = sextant_testkit::peers::http_request(outbound, "web.test.svc", "/", &[]).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term = Instant::now();
    agent.sigterm().await;
    let (code, exited) = agent.exited(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{}", log(dir.path()));
    let took = exited - term;
    eprintln!("exited {took:?} after SIGTERM with a connection open");
    assert!(
        took >= Duration::from_millis(2500),
        "it did not wait for the deadline: {took:?}"
    );
    assert!(log(dir.path()).contains("connections still open at the drain deadline"));
    stuck.abort();
}

/// `POST /quitquitquit` (a job's last step) ends the agent like SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_ends_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web-backend").await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _sx = mesh_with(&backend, dir.path(), xds).await;
    let mut agent = Agent::start(dir.path(), xds, "10s");
    agent.until_ready(200).await;
    let r = sextant_testkit::peers::http_post(agent.status, "/quitquitquit", "")
        .await
        .expect("quitquitquit");
    assert_eq!(r.0, 200);
    let (code, _) = agent.exited(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{}", log(dir.path()));
}

/// `sextant agent wait` returns once the agent is ready, and fails (non-zero)
/// when it never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_wait_holds_until_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = HttpBackend::start("web-backend").await;
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start(dir.path(), xds, "10s");
    let status = agent.status.to_string();
    let waiting = tokio::spawn(async move {
        Command::new(BIN)
            .args([
                "agent",
                "wait",
                "--status-addr",
                &status,
                "--timeout",
                "60s",
            ])
            .output()
            .await
            .expect("agent wait")
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "wait returned before the proxy was ready"
    );
    let _sx = mesh_with(&backend, dir.path(), xds).await;
    let out = waiting.await.expect("task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let never = Command::new(BIN)
        .args(["agent", "wait", "--status-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--timeout", "1s"])
        .output()
        .await
        .expect("agent wait");
    assert!(!never.status.success());
}

/// An Envoy that keeps crashing (here one that exits as soon as it runs)
/// is started again with backoff, and after `--max-restarts` the agent
/// gives up with a non-zero status, so the kubelet sees the container fail;
/// a binary that does not exist fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_envoy_makes_the_agent_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("crashing-envoy");
    std::fs::write(&fake, "#!/bin/sh\necho 'crashing on purpose' >&2\nexit 3\n").expect("script");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let pod = dir.path().join("pod");
    std::fs::create_dir_all(&pod).expect("mkdir");
    let run = |envoy: std::path::PathBuf| {
        let (dir, pod) = (dir.path().to_owned(), pod.clone());
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(30),
                Command::new(BIN)
                    .args(["agent", "--xds-addr", "127.0.0.1:1", "--max-restarts", "2"])
                    .arg("--envoy-path")
                    .arg(envoy)
                    .args(["--status-addr", &format!("127.0.0.1:{}", free_port())])
                    .arg("--proxy-dir")
                    .arg(dir.join("proxy"))
                    .arg("--pod-info-dir")
                    .arg(&pod)
                    .env("POD_NAME", "web-1")
                    .env("POD_NAMESPACE", "shop")
                    .env("INSTANCE_IP", "127.0.0.1")
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("the agent gives up within 30 s")
            .expect("run the agent");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, log) = run(fake).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{log}");
    assert_eq!(
        log.matches("crashing on purpose").count(),
        3,
        "started, then restarted twice:\n{log}"
    );
    assert!(log.contains("giving up"), "{log}");

    let (code, log) = run(dir.path().join("no-such-envoy")).await;
    assert!(code.is_some_and(|c| c != 0));
    assert_eq!(
        log.matches("restarting it").count(),
        0,
        "not retried:\n{log}"
    );
    assert!(log.contains("--envoy-path"), "{log}");
}

/// A child's stdout, a JSON value per line.
struct Lines(tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>);

impl Lines {
    async fn next(&mut self, bound: Duration, what: &str) -> serde_json::Value {
        let line = tokio::time::timeout(bound, self.0.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing within {bound:?}"))
            .expect("read")
            .unwrap_or_else(|| panic!("{what}: the client ended"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {line:?}: {e}"))
    }
}

/// One handshake and request through `tls_probe.py` (Python's ssl).
async fn probe(port: u16, root: &Path, client: Option<(&Path, &Path)>) -> serde_json::Value {
    let mut cmd = Command::new(sextant_testkit::peers::python_path());
    cmd.arg(
        sextant_testkit::peers::workspace_root().join("crates/sextant/tests/clients/tls_probe.py"),
    )
    .arg(port.to_string())
    .arg(root);
    if let Some((cert, key)) = client {
        cmd.arg(cert).arg(key);
    }
    let out = cmd.output().await.expect("run tls_probe.py");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tls_probe.py: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The DER of the first certificate in `pem`, to compare certificates
/// whatever their PEM line breaks.
fn first_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// An Envoy whose one listener (on `port`) terminates mutual TLS with the
/// agent's `default` certificate and checks clients against `ROOTCA`,
/// both over SDS through the `sds-grpc` cluster the agent's own bootstrap
/// defines (copied from it).
fn sds_envoy(agent_bootstrap: &str, port: u16) -> String {
    let sds_cluster = &agent_bootstrap[agent_bootstrap
        .find("    # The agent's SDS socket")
        .expect("the agent's bootstrap names its SDS socket")..];
    let sds = "sds_config: { resource_api_version: V3, api_config_source: { api_type: GRPC, transport_api_version: V3, grpc_services: [ { envoy_grpc: { cluster_name: sds-grpc } } ] } }";
    format!(
        r#"node: {{ id: sds-test, cluster: sds-test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
    - name: mtls
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                tls_certificate_sds_secret_configs:
                  - {{ name: default, {sds} }}
                validation_context_sds_secret_config: {{ name: ROOTCA, {sds} }}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: mtls
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          direct_response: {{ status: 200, body: {{ inline_string: "mtls ok" }} }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{sds_cluster}"#
    )
}

/// The workload certificate, whole: the agent makes a key, asks Sextant's
/// CA with the pod's token over the TLS port, is ready only once it holds
/// the certificate, writes the files for gRPC, and serves it over SDS to an
/// independent client (grpcio) and to a real Envoy that terminates mutual
/// TLS with it. Then the CA goes away for longer than the renewal point:
/// the certificate in hand keeps serving; when the CA is back the agent
/// renews, and the new certificate reaches the same Envoy without a
/// restart. (One-minute certificates, renewed at 30 s ± 6 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_certificate_reaches_envoy_over_sds_and_renews_after_a_ca_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = |p: &Path| p.to_str().expect("path").to_owned();
    let backend = HttpBackend::start("web").await;
    let mesh_file = d.join("mesh.yaml");
    std::fs::write(&mesh_file, mesh(&[&backend])).expect("write mesh");
    std::fs::write(d.join("tokens"), "tok-web shop web\n").expect("tokens");
    std::fs::write(d.join("token"), "tok-web").expect("token");
    let ca_dir = d.join("ca");
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut sx = Sextant::start(
        d,
        &[
            "--file",
            &p(&mesh_file),
            "--xds-tls-addr",
            &tls.to_string(),
            "--ca-dir",
            &p(&ca_dir),
            "--workload-cert-ttl",
            "1m",
            "--xds-token-file",
            &p(&d.join("tokens")),
        ],
    )
    .await;
    let root_file = ca_dir.join("root-cert.pem");
    let root = std::fs::read_to_string(&root_file).expect("the CA's root");
    let agent = Agent::start_with(
        d,
        tls,
        "5s",
        &[
            "--xds-ca",
            &p(&root_file),
            "--token-file",
            &p(&d.join("token")),
            "--cert-ttl",
            "1h",
        ],
    );
    agent.until_ready(200).await;

    // The files for proxyless gRPC: the key private, the root the CA's.
    let certs = agent.proxy_dir.join("certs");
    let chain = std::fs::read_to_string(certs.join("cert-chain.pem")).expect("cert-chain.pem");
    let key = certs.join("key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key.pem").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(certs.join("root-cert.pem")).expect("root"),
        root
    );

    // SDS, read by grpcio with Envoy's own protos.
    let mut sds_child = Command::new(sextant_testkit::peers::python_path())
        .arg(
            sextant_testkit::peers::workspace_root()
                .join("crates/sextant/tests/clients/sds_client.py"),
        )
        .arg(agent.proxy_dir.join("sds.sock"))
        .args(["default", "ROOTCA"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run sds_client.py");
    let mut sds = Lines(tokio::io::AsyncBufReadExt::lines(
        tokio::io::BufReader::new(sds_child.stdout.take().expect("stdout")),
    ));
    let first = sds
        .next(Duration::from_secs(10), "the first SDS answer")
        .await;
    assert_eq!(first["version"], "1", "{first}");
    assert_eq!(first["secrets"]["default"]["chain"], chain.as_str());
    assert_eq!(first["secrets"]["ROOTCA"]["root"], root.as_str());

    // A real Envoy terminating mutual TLS with what SDS serves.
    let bootstrap = std::fs::read_to_string(agent.proxy_dir.join("envoy.yaml")).expect("bootstrap");
    let port = free_port();
    let envoy = sextant_testkit::peers::Envoy::start(&sds_envoy(&bootstrap, port)).await;
    let client = (certs.join("cert-chain.pem"), key.clone());
    let client = Some((client.0.as_path(), client.1.as_path()));
    let mut answer = serde_json::Value::Null;
    for _ in 0..100 {
        answer = probe(port, &root_file, client).await;
        if answer["status"].as_str().is_some_and(|s| s.contains("200")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answer["status"].as_str().is_some_and(|s| s.contains("200")),
        "mutual TLS with the SDS certificate: {answer}\n{}",
        envoy.log()
    );
    assert_eq!(
        first_der(answer["peer"].as_str().expect("peer")),
        first_der(&chain)
    );
    let anonymous = probe(port, &root_file, None).await;
    assert!(
        anonymous["status"]
            .as_str()
            .is_none_or(|s| !s.contains("200")),
        "a client without a certificate is refused: {anonymous}"
    );

    // The CA goes away past the renewal point (30 s ± 6 s into the
    // minute): the agent says it cannot renew, and what it holds serves on.
    sx.kill().await;
    let started = Instant::now();
    while !log(d).contains("cannot renew the workload certificate") {
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "the agent never tried to renew:\n{}",
            log(d)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = probe(port, &root_file, client).await;
    assert_eq!(
        first_der(
            during["peer"]
                .as_str()
                .unwrap_or_else(|| panic!("{during}"))
        ),
        first_der(&chain),
        "the certificate in hand serves while the CA is away"
    );
    assert_eq!(agent.ready().await.0, 200, "still ready");
    // And says so on its metrics, with the expiry of what it holds.
    let (_, metrics) = http_get(agent.status, "localhost", "/metrics")
        .await
        .expect("/metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(value("sextant_agent_certificate_request_failures_total") >= 1);
    assert_eq!(value("sextant_agent_certificates_received_total"), 1);
    let held_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry = value("sextant_agent_certificate_expiry_seconds");
    assert!(
        expiry > held_until && expiry <= held_until + 60,
        "{expiry} vs now {held_until}"
    );

    // The CA is back (the same root, from its directory): the agent's next
    // retry renews, SDS pushes version 2, and Envoy serves it.
    sx.restart().await;
    let second = sds
        .next(Duration::from_secs(40), "the renewed certificate")
        .await;
    assert_eq!(second["version"], "2", "{second}");
    let renewed = second["secrets"]["default"]["chain"]
        .as_str()
        .expect("chain")
        .to_owned();
    assert_ne!(first_der(&renewed), first_der(&chain));
    assert_eq!(second["secrets"]["ROOTCA"]["root"], root.as_str());
    let mut served = Vec::new();
    for _ in 0..100 {
        let answer = probe(port, &root_file, client).await;
        served = answer["peer"].as_str().map(first_der).unwrap_or_default();
        if served == first_der(&renewed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served,
        first_der(&renewed),
        "Envoy serves the renewed certificate"
    );
    assert_eq!(
        std::fs::read_to_string(certs.join("cert-chain.pem")).expect("chain"),
        renewed,
        "the files follow"
    );
}

#[path = "agent/proxyless.rs"]
mod proxyless;

#[path = "agent/router.rs"]
mod router;
