//! Transparent capture, for real: network namespaces this test creates (an
//! "app" pod and a "backends" network, joined by a veth pair), Sextant and
//! a capture-mode Envoy inside the app namespace, and `sextant iptables`
//! applied there. The application (curl, run as another user than the
//! proxy) talks to services' virtual IPs as a pod would; every connection
//! must go through Envoy. Every address lives inside the test's own
//! namespaces; the root namespace's interfaces, routes and iptables are
//! never touched.
//!
//! Needs root, `ip` (iproute2), iptables, curl and setpriv; without them it
//! fails saying what is missing (scripts/install-peers.sh installs
//! iptables and curl).
//!
//! Where things are: here the one-pod scenarios (`Pod`); `capture/netns.rs`
//! the namespaces and how commands run in them; `capture/mesh.rs` two
//! pods with agents (`MeshPods`) and the mutual TLS, rotation and
//! authorization scenarios; `capture/vm.rs` a VM registering itself,
//! `capture/ingress.rs` a Sidecar's ingress, `capture/identity.rs` the
//! identities an upstream must prove.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sextant_testkit::certs::TestCa;
use sextant_testkit::peers::{envoy_path, kill_processes_with_arg};
use tokio::process::{Child, Command};

#[path = "capture/netns.rs"]
mod netns;
use netns::*;

const BACKENDS: &str = r#"
import http.server, socket, ssl, sys, threading
a, b, cert, key = sys.argv[1:5]
def http_server(addr, port, name, tls=False):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (name + "\n").encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    s = http.server.ThreadingHTTPServer((addr, port), H)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()
def echo(addr, port):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((addr, port))
    l.listen()
    def serve(c):
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(b"echo:" + d)
        c.close()
    def accept():
        while True:
            c, _ = l.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
http_server(a, 8080, "backend-a")
http_server(b, 8080, "backend-b")
http_server(b, 7000, "outside-the-mesh")
http_server(a, 8443, "tls-backend", tls=True)
http_server(b, 8443, "tls-backend-b", tls=True)
echo(a, 9000)
print("ready", flush=True)
threading.Event().wait()
"#;

fn mesh_yaml(extra: &str) -> String {
    format!(
        "services:
  - hostname: web.test.svc
    namespace: test
    addresses: [10.96.0.10]
    ports: [{{ name: http, port: 80, protocol: HTTP }}]
    endpoints:
      - {{ address: {BACKEND_A}, ports: {{ http: 8080 }} }}
      - {{ address: {BACKEND_B}, ports: {{ http: 8080 }} }}
  - hostname: echo.test.svc
    namespace: test
    addresses: [10.96.0.11]
    ports: [{{ name: tcp, port: 9000, protocol: TCP }}]
    endpoints:
      - {{ address: {BACKEND_A} }}
  - hostname: tls.test.svc
    namespace: test
    addresses: [10.96.0.12]
    ports: [{{ name: tls, port: 443, protocol: TLS }}]
    endpoints:
      - {{ address: {BACKEND_A}, ports: {{ tls: 8443 }} }}
  - hostname: app.test.svc
    namespace: test
    addresses: [10.96.0.20]
    ports: [{{ name: http, port: 80, protocol: HTTP }}]
    endpoints:
      - {{ address: {APP_IP}, ports: {{ http: 8000 }} }}
{extra}"
    )
}

/// The service the capture test adds while running.
fn new_service() -> String {
    format!(
        "  - hostname: new.test.svc
    namespace: test
    addresses: [10.96.0.13]
    ports: [{{ name: http, port: 80, protocol: HTTP }}]
    endpoints:
      - {{ address: {BACKEND_B}, ports: {{ http: 8080 }} }}
"
    )
}

struct Pod {
    ns: Namespaces,
    dir: tempfile::TempDir,
    _backends: Child,
    _app: Child,
    sextant: Option<Child>,
    /// Envoy, or the agent running it.
    proxy: Option<Child>,
}

impl Drop for Pod {
    /// An agent's Envoy outlives the agent's kill: it goes too.
    fn drop(&mut self) {
        if let Some(mut proxy) = self.proxy.take() {
            let _ = proxy.start_kill();
        }
        kill_processes_with_arg(&self.path("proxy").join("envoy.yaml").display().to_string());
    }
}

impl Pod {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_sextant(&mut self, extra: &[&str]) {
        stop(self.sextant.take());
        let mesh = self.path("mesh.yaml");
        let mut cmd = vec![
            SEXTANT,
            "--file",
            mesh.to_str().expect("path"),
            "--xds-addr",
            "127.0.0.1:15010",
            "--admin-addr",
            "127.0.0.1:15014",
        ];
        cmd.extend(extra);
        self.sextant = Some(Namespaces::spawn(
            &self.ns.app,
            &self.path("sextant.log"),
            &cmd,
        ));
    }

    fn logs(&self) -> String {
        logs_of(
            self.dir.path(),
            &["sextant.log", "envoy.log", "agent.log", "backends.log"],
        )
    }
}

/// The namespaces, the backends, the application's server and Sextant:
/// everything but the proxy and capture.
async fn setup() -> Pod {
    require_tools();
    let ns = Namespaces::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // The application user reads the CA file.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let ca = TestCa::new("capture test ca");
    ca.write(dir.path(), "ca");
    let (cert, key) = ca
        .server(&["tls.test.svc", "partner.example"])
        .write(dir.path(), "tls");
    let script = dir.path().join("backends.py");
    std::fs::write(&script, BACKENDS).expect("write");
    let backends = Namespaces::spawn(
        &ns.backends,
        &dir.path().join("backends.log"),
        &[
            "python3",
            script.to_str().expect("path"),
            BACKEND_A,
            BACKEND_B,
            cert.to_str().expect("path"),
            key.to_str().expect("path"),
        ],
    );
    // The application's own server, which inbound traffic must reach
    // through the proxy.
    let app = Namespaces::spawn(
        &ns.app,
        &dir.path().join("app.log"),
        &["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"],
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh_yaml("")).expect("write");
    let envoy_bin = envoy_path();
    assert!(
        envoy_bin.exists(),
        "Envoy is missing at {}: run scripts/install-peers.sh",
        envoy_bin.display()
    );
    let mut p = Pod {
        ns,
        dir,
        _backends: backends,
        _app: app,
        sextant: None,
        proxy: None,
    };
    p.start_sextant(&[]);
    let backends_ns = p.ns.backends.clone();
    until("the backends", Duration::from_secs(30), || {
        let ns = backends_ns.clone();
        async move {
            run_in(
                &ns,
                &[
                    "curl",
                    "-s",
                    "-m",
                    "1",
                    &format!("http://{BACKEND_B}:7000/"),
                ],
            )
            .await
            .0
        }
    })
    .await;
    p
}

/// A pod with Envoy started by the test from `sextant bootstrap`, then
/// capture applied once Envoy listens.
async fn pod() -> Pod {
    let mut p = setup().await;
    let bootstrap = std::process::Command::new(SEXTANT)
        .args([
            "bootstrap",
            "--node-id",
            "app-1",
            "--namespace",
            "test",
            "--ip",
            APP_IP,
            "--mode",
            "capture",
            "--admin-port",
            "15000",
        ])
        .output()
        .expect("bootstrap");
    assert!(bootstrap.status.success());
    let envoy_yaml = p.path("envoy.yaml");
    std::fs::write(&envoy_yaml, &bootstrap.stdout).expect("write");
    p.proxy = Some(Namespaces::spawn(
        &p.ns.app,
        &p.path("envoy.log"),
        &[
            envoy_path().to_str().expect("path"),
            "-c",
            envoy_yaml.to_str().expect("path"),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ],
    ));
    let app_ns = p.ns.app.clone();
    until("Envoy's capture listeners", Duration::from_secs(30), || {
        let app_ns = app_ns.clone();
        async move {
            let (_, l) = run_in(&app_ns, &["curl", "-s", "http://127.0.0.1:15000/listeners"]).await;
            [
                "virtualOutbound",
                "virtualInbound",
                "0.0.0.0_80",
                "0.0.0.0_443",
                "10.96.0.11_9000",
            ]
            .iter()
            .all(|n| l.contains(n))
        }
    })
    .await;
    let (ok, _) = run_in(&p.ns.app, &[SEXTANT, "iptables", "--proxy-uid", "0"]).await;
    assert!(ok, "sextant iptables failed:\n{}", p.logs());
    p
}

/// An injected pod's order of events, in the network namespace: the init
/// container's `sextant iptables`, then the proxy container's `sextant
/// agent` (which writes the bootstrap and starts Envoy), then the
/// postStart hold, `sextant agent wait`, and only then the application,
/// whose very first request must go through: no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_started_after_the_agent_is_ready_is_served_from_its_first_request() {
    let mut p = setup().await;
    let app = p.ns.app.clone();
    // The init container.
    let (ok, _) = run_in(&app, &[SEXTANT, "iptables", "--proxy-uid", "0"]).await;
    assert!(ok, "sextant iptables failed:\n{}", p.logs());
    // What an application started before its proxy meets: captured, and
    // nothing listens yet (istio/istio#11130). This is why it waits.
    let (ok, _) = app_curl(&app, &["-m", "2", "http://10.96.0.10/"]).await;
    assert!(!ok, "served without a proxy: capture is not in force");
    // The proxy container, as the template runs it (the pod's identity
    // from the environment and the downward API's files).
    let podinfo = p.path("podinfo");
    std::fs::create_dir_all(&podinfo).expect("mkdir");
    std::fs::write(podinfo.join("labels"), "app=\"client\"\n").expect("labels");
    let proxy_dir = p.path("proxy");
    let envoy = envoy_path();
    let agent = vec![
        "env".to_owned(),
        "POD_NAME=client-1".to_owned(),
        "POD_NAMESPACE=test".to_owned(),
        format!("INSTANCE_IP={APP_IP}"),
        "SERVICE_ACCOUNT=client".to_owned(),
        SEXTANT.to_owned(),
        "agent".to_owned(),
        "--xds-addr".to_owned(),
        "127.0.0.1:15010".to_owned(),
        "--envoy-path".to_owned(),
        envoy.display().to_string(),
        "--envoy-admin-port".to_owned(),
        "15000".to_owned(),
        "--status-addr".to_owned(),
        "127.0.0.1:15021".to_owned(),
        "--proxy-dir".to_owned(),
        proxy_dir.display().to_string(),
        "--pod-info-dir".to_owned(),
        podinfo.display().to_string(),
        "--mode".to_owned(),
        "capture".to_owned(),
        "--concurrency".to_owned(),
        "1".to_owned(),
    ];
    let agent: Vec<&str> = agent.iter().map(String::as_str).collect();
    p.proxy = Some(Namespaces::spawn(&app, &p.path("agent.log"), &agent));
    // The postStart hold: returns once the agent says ready.
    let started = Instant::now();
    let (ok, _) = tokio::time::timeout(
        Duration::from_secs(60),
        run_in(
            &app,
            &[SEXTANT, "agent", "wait", "--status-addr", "127.0.0.1:15021"],
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("agent wait did not return in 60 s:\n{}", p.logs()));
    assert!(ok, "agent wait failed:\n{}", p.logs());
    eprintln!(
        "the agent was ready {:?} after it started",
        started.elapsed()
    );

    // The application's first request, to a service's virtual IP and to
    // a TCP service: both served at once.
    let (ok, body) = app_curl(&app, &["http://10.96.0.10/"]).await;
    assert!(
        ok && body.starts_with("backend-"),
        "the first request after readiness failed: {body:?}\n{}",
        p.logs()
    );
    let mut cmd: Vec<&str> = APP_USER.to_vec();
    cmd.extend([
        "bash",
        "-c",
        "exec 3<>/dev/tcp/10.96.0.11/9000; printf ping >&3; head -c 9 <&3",
    ]);
    let (ok, echoed) = run_in(&app, &cmd).await;
    assert!(ok && echoed == "echo:ping", "{echoed:?}\n{}", p.logs());
    // Through the proxy the agent started, which carries the pod's name.
    assert_eq!(
        stat(&app, "cluster.outbound|80||web.test.svc.upstream_rq_total").await,
        1
    );
    let (_, info) = run_in(&app, &["curl", "-s", "http://127.0.0.1:15000/server_info"]).await;
    assert!(info.contains("client-1"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_traffic_goes_through_the_proxy_in_and_out() {
    let mut p = pod().await;
    let app = p.ns.app.clone();

    // HTTP to a virtual IP: captured and balanced over both endpoints.
    let before = stat(&app, "cluster.outbound|80||web.test.svc.upstream_rq_total").await;
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let (ok, body) = app_curl(&app, &["http://10.96.0.10/"]).await;
        assert!(ok, "{}", p.logs());
        *seen.entry(body.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["backend-a", "backend-b"],
        "{seen:?}"
    );
    let after = stat(&app, "cluster.outbound|80||web.test.svc.upstream_rq_total").await;
    assert_eq!(after - before, 20, "every request went through Envoy");

    // TCP to a virtual IP: an echo through the service's cluster.
    let mut cmd: Vec<&str> = APP_USER.to_vec();
    cmd.extend([
        "bash",
        "-c",
        "exec 3<>/dev/tcp/10.96.0.11/9000; printf ping >&3; head -c 9 <&3",
    ]);
    let (ok, echoed) = run_in(&app, &cmd).await;
    assert!(ok && echoed == "echo:ping", "{echoed:?}\n{}", p.logs());
    assert!(
        stat(
            &app,
            "cluster.outbound|9000||echo.test.svc.upstream_cx_total"
        )
        .await
            >= 1
    );

    // TLS passed through by SNI: the client verifies the backend's own
    // certificate, so Envoy did not terminate it.
    let ca = p.path("ca.pem");
    let curl_tls = || {
        let (app, ca) = (app.clone(), ca.clone());
        async move {
            app_curl(
                &app,
                &[
                    "--cacert",
                    ca.to_str().expect("path"),
                    "--resolve",
                    "tls.test.svc:443:10.96.0.12",
                    "https://tls.test.svc/",
                ],
            )
            .await
        }
    };
    let (ok, body) = curl_tls().await;
    assert!(ok && body == "tls-backend\n", "{body:?}\n{}", p.logs());
    assert!(stat(&app, "cluster.outbound|443||tls.test.svc.upstream_cx_total").await >= 1);

    // A TLS route (Istio's VirtualService `tls`): connections whose client
    // hello names tls.test.svc go to another service's backend, the route
    // written into the file while everything runs; still passed through
    // (the client verifies the backend's certificate).
    let tls_route = "  - hostname: tls-b.test.svc
    namespace: test
    ports: [{ name: tls, port: 443, protocol: TLS }]
    endpoints:
      - { address: BACKEND_B, ports: { tls: 8443 } }
routes:
  - name: tls-by-sni
    namespace: test
    hosts: [tls.test.svc]
    tls:
      - match: [{ port: 443, sniHosts: [tls.test.svc] }]
        route: [{ destination: { host: tls-b.test.svc, port: { number: 443 } } }]
"
    .replace("BACKEND_B", BACKEND_B);
    std::fs::write(p.path("mesh.yaml"), mesh_yaml(&tls_route)).expect("write");
    let took = until("the TLS route", Duration::from_secs(10), || async {
        curl_tls().await.1 == "tls-backend-b\n"
    })
    .await;
    eprintln!("the TLS route took {took:?}");
    for _ in 0..5 {
        assert_eq!(curl_tls().await.1, "tls-backend-b\n", "{}", p.logs());
    }
    assert!(
        stat(
            &app,
            "cluster.outbound|443||tls-b.test.svc.upstream_cx_total"
        )
        .await
            >= 6
    );

    // Outside the mesh, allowed by default: passed through.
    let (ok, body) = app_curl(&app, &[&format!("http://{BACKEND_B}:7000/")]).await;
    assert!(ok && body == "outside-the-mesh\n", "{body:?}");
    assert!(stat(&app, "cluster.PassthroughCluster.upstream_cx_total").await >= 1);

    // Inbound: a request from the backends' network to the app's port
    // reaches the app through its proxy.
    let inbound_before = stat(&app, "cluster.inbound|8000||.upstream_rq_total").await;
    let (ok, _) = run_in(
        &p.ns.backends,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-f",
            &format!("http://{APP_IP}:8000/"),
        ],
    )
    .await;
    assert!(ok, "inbound request failed:\n{}", p.logs());
    assert_eq!(
        stat(&app, "cluster.inbound|8000||.upstream_rq_total").await - inbound_before,
        1
    );

    // A service added while running is reachable through capture soon
    // after the file is written (the file debounce is 100 ms).
    std::fs::write(p.path("mesh.yaml"), mesh_yaml(&new_service())).expect("write");
    // Polled in Envoy's configuration, not with requests: until the route
    // exists, a request to the new virtual IP is passed through to an
    // address nobody has, and hangs until its timeout.
    let took = until("the new service", Duration::from_secs(10), || {
        let app = app.clone();
        async move {
            let (_, dump) = run_in(
                &app,
                &[
                    "curl",
                    "-s",
                    "http://127.0.0.1:15000/config_dump?resource=dynamic_route_configs",
                ],
            )
            .await;
            dump.contains("10.96.0.13")
        }
    })
    .await;
    eprintln!("a new service's route reached Envoy {took:?} after the file was written");
    let (ok, body) = app_curl(&app, &["http://10.96.0.13/"]).await;
    assert!(ok && body == "backend-b\n", "{body:?}\n{}", p.logs());

    // ServiceEntries: an external HTTPS name, matched by SNI whatever
    // address the application resolved it to (the client verifies the
    // backend's own certificate: passed through), and a name left to the
    // original destination (resolution NONE).
    let entries = format!(
        "serviceEntries:
  - name: partner
    namespace: test
    hosts: [partner.example]
    location: MESH_EXTERNAL
    resolution: STATIC
    ports: [{{ number: 443, name: https, protocol: HTTPS, targetPort: 8443 }}]
    endpoints: [{{ address: {BACKEND_A} }}]
  - name: direct
    namespace: test
    hosts: [direct.example]
    location: MESH_EXTERNAL
    resolution: NONE
    ports: [{{ number: 8080, name: http, protocol: HTTP }}]
"
    );
    std::fs::write(
        p.path("mesh.yaml"),
        format!("{}{entries}", mesh_yaml(&new_service())),
    )
    .expect("write");
    until("the entries", Duration::from_secs(10), || {
        let app = app.clone();
        async move {
            let (_, dump) =
                run_in(&app, &["curl", "-s", "http://127.0.0.1:15000/config_dump"]).await;
            dump.contains("partner.example") && dump.contains("direct.example")
        }
    })
    .await;
    let (ok, body) = app_curl(
        &app,
        &[
            "--cacert",
            ca.to_str().expect("path"),
            "--resolve",
            "partner.example:443:10.96.0.99",
            "https://partner.example/",
        ],
    )
    .await;
    assert!(ok && body == "tls-backend\n", "{body:?}\n{}", p.logs());
    assert!(
        stat(
            &app,
            "cluster.outbound|443||partner.example.upstream_cx_total"
        )
        .await
            >= 1
    );

    // Blocking destinations outside the mesh: Sextant restarted with the
    // policy; Envoy reconnects and the passthrough becomes a black hole,
    // while mesh traffic goes on.
    p.start_sextant(&["--outbound-traffic-policy", "block"]);
    until("the blocked policy", Duration::from_secs(30), || {
        let app = app.clone();
        async move {
            !app_curl(&app, &[&format!("http://{BACKEND_B}:7000/")])
                .await
                .0
        }
    })
    .await;
    let (ok, body) = app_curl(&app, &["http://10.96.0.10/"]).await;
    assert!(ok && body.starts_with("backend-"), "{body:?}\n{}", p.logs());
    assert!(stat(&app, "cluster.BlackHoleCluster.upstream_cx_none_healthy").await >= 1);
    // Blocked, except the ServiceEntry's host, which goes where the
    // application sent it (resolution NONE: the original destination).
    let (_, body) = app_curl(&app, &[&format!("http://{BACKEND_A}:8080/")]).await;
    assert!(body.contains("blocked"), "{body:?}");
    let (ok, body) = app_curl(
        &app,
        &[
            "-H",
            "Host: direct.example",
            &format!("http://{BACKEND_A}:8080/"),
        ],
    )
    .await;
    assert!(ok && body == "backend-a\n", "{body:?}\n{}", p.logs());
    assert!(
        stat(
            &app,
            "cluster.outbound|8080||direct.example.upstream_rq_total"
        )
        .await
            >= 1
    );

    // The namespace's Sidecar opens the way out again for its proxies
    // (Istio's outboundTrafficPolicy, over the mesh's REGISTRY_ONLY),
    // without a restart: written into the file while everything runs.
    let mesh = std::fs::read_to_string(p.path("mesh.yaml")).expect("read");
    std::fs::write(
        p.path("mesh.yaml"),
        format!(
            "{mesh}scopes:\n  - {{ name: open-egress, namespace: test, outboundTrafficPolicy: {{ mode: ALLOW_ANY }} }}\n"
        ),
    )
    .expect("write");
    until("the Sidecar's ALLOW_ANY", Duration::from_secs(10), || {
        let app = app.clone();
        async move {
            app_curl(&app, &[&format!("http://{BACKEND_B}:7000/")])
                .await
                .1
                == "outside-the-mesh\n"
        }
    })
    .await;
    let (ok, body) = app_curl(&app, &["http://10.96.0.10/"]).await;
    assert!(
        ok && body.starts_with("backend-"),
        "mesh traffic goes on: {body:?}"
    );

    // The root namespace saw none of it.
    let (_, routes) = run_in(&p.ns.backends, &["ip", "route"]).await;
    assert!(!routes.contains("10.96.0.0/16"), "{routes}");
}

#[path = "capture/mesh.rs"]
mod mesh;
use mesh::MeshPods;

#[path = "capture/vm.rs"]
mod vm;

#[path = "capture/ingress.rs"]
mod ingress;

#[path = "capture/identity.rs"]
mod identity;
