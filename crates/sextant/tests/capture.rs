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
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sextant_testkit::certs::TestCa;
use sextant_testkit::peers::{envoy_path, kill_processes_with_arg};
use tokio::process::{Child, Command};

const SEXTANT: &str = env!("CARGO_BIN_EXE_sextant");
/// The app pod's address, the two backends', and the services' virtual IPs.
const APP_IP: &str = "10.250.0.1";
const BACKEND_A: &str = "10.250.0.2";
const BACKEND_B: &str = "10.250.0.3";
/// The unprivileged user the application runs as (the proxy is root here,
/// exempt from capture by `--proxy-uid 0`).
const APP_USER: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

fn require_tools() {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the capture test needs root (network namespaces and iptables); CI runs as root"
    );
    for tool in ["ip", "iptables", "iptables-restore", "curl", "setpriv"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "the capture test needs `{tool}` (scripts/install-peers.sh installs iptables and curl)"
        );
    }
}

/// Two network namespaces joined by a veth pair, deleted when dropped.
struct Namespaces {
    app: String,
    backends: String,
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    fn new() -> Namespaces {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("sx{}-{n}", std::process::id());
        let ns = Namespaces {
            app: format!("{tag}-app"),
            backends: format!("{tag}-back"),
        };
        ip(&["netns", "add", &ns.app]);
        ip(&["netns", "add", &ns.backends]);
        // Both ends created inside the namespaces: nothing appears in the
        // root namespace, even for a moment.
        ip(&[
            "-n",
            &ns.app,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.backends,
        ]);
        ip(&[
            "-n",
            &ns.app,
            "addr",
            "add",
            &format!("{APP_IP}/24"),
            "dev",
            "eth0",
        ]);
        for a in [BACKEND_A, BACKEND_B] {
            ip(&[
                "-n",
                &ns.backends,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "eth0",
            ]);
        }
        for n in [&ns.app, &ns.backends] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "link", "set", "eth0", "up"]);
        }
        // Virtual IPs are routed out of the pod, as on a node; capture
        // takes the connections before they leave.
        ip(&["-n", &ns.app, "route", "add", "10.96.0.0/16", "dev", "eth0"]);
        ns
    }

    /// `cmd` inside namespace `ns`, killed when dropped; output to `log`.
    fn spawn(ns: &str, log: &Path, cmd: &[&str]) -> Child {
        let out = std::fs::File::create(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.app, &self.backends] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .output();
        }
    }
}

/// Runs `cmd` inside `ns` to completion: (success, stdout).
async fn run_in(ns: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What the application gets: a request as the unprivileged user.
async fn app_curl(ns: &str, args: &[&str]) -> (bool, String) {
    let mut cmd: Vec<&str> = APP_USER.to_vec();
    cmd.extend(["curl", "-s", "-m", "5"]);
    cmd.extend(args);
    run_in(ns, &cmd).await
}

/// Envoy's stat `name` (0 if absent).
async fn stat(ns: &str, name: &str) -> u64 {
    let (_, body) = run_in(ns, &["curl", "-s", "http://127.0.0.1:15000/stats"]).await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until `check` holds; how long it took.
async fn until<F, Fut>(what: &str, limit: Duration, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

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

/// Kills `child` and waits (10 s at most) until it has exited: the next
/// Sextant binds its port, and under load a killed process takes a moment
/// to let it go.
fn stop(child: Option<Child>) {
    if let Some(mut old) = child {
        let _ = old.start_kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(old.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
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
        ["sextant.log", "envoy.log", "agent.log", "backends.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.path(f)).unwrap_or_default()
                )
            })
            .collect()
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

/// The server of the mutual TLS tests: HTTP on the given port, answering
/// with the identity the proxy passed it (`x-forwarded-client-cert`, empty
/// when none), and a TCP echo on 9000 (one exchange per connection).
const XFCC_SERVER: &str = r#"
import http.server, socket, sys, threading
def echo(port):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    def serve(c):
        d = c.recv(64)
        if d:
            c.sendall(b"echo:" + d)
        c.close()
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=echo, args=(9000,), daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("xfcc=" + self.headers.get("x-forwarded-client-cert", "") + "\n").encode()
        self.send_response(500 if self.path == "/sick" else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Two pods with agents and capture, one Sextant with its CA.
struct MeshPods {
    ns: Namespaces,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    sextant: Option<Child>,
}

impl Drop for MeshPods {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        for pod in ["client", "server"] {
            kill_processes_with_arg(
                &self
                    .dir
                    .path()
                    .join(pod)
                    .join("proxy")
                    .join("envoy.yaml")
                    .display()
                    .to_string(),
            );
        }
    }
}

impl MeshPods {
    /// The namespaces, the files, the server application and Sextant
    /// (with `sextant_args`) ready: no pod's proxy yet.
    async fn new(sextant_args: &[&str]) -> MeshPods {
        require_tools();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let mut m = MeshPods {
            ns: Namespaces::new(),
            dir,
            children: Vec::new(),
            sextant: None,
        };
        m.write_files();
        let script = m.path("server.py");
        let server_ns = m.ns.backends.clone();
        m.children.push(Namespaces::spawn(
            &server_ns,
            &m.path("server.log"),
            &["python3", script.to_str().expect("path"), "8090"],
        ));
        m.start_sextant(sextant_args);
        m.sextant_ready().await;
        m
    }

    /// The mesh file (web: HTTP on the server pod's 8090; echo: TCP on its
    /// 9000; both endpoints labelled as sidecars, with the pod's app label
    /// as Kubernetes endpoints carry it), the token file, the
    /// server application's script.
    fn write_files(&self) {
        std::fs::write(
            self.path("mesh.yaml"),
            format!(
                "services:
  - hostname: web.test.svc
    namespace: test
    addresses: [10.96.0.10]
    ports: [{{ name: http, port: 80, protocol: HTTP }}]
    endpoints:
      - address: {BACKEND_A}
        ports: {{ http: 8090 }}
        labels: {{ app: server, security.istio.io/tlsMode: istio }}
  - hostname: echo.test.svc
    namespace: test
    addresses: [10.96.0.11]
    ports: [{{ name: tcp, port: 9000, protocol: TCP }}]
    endpoints:
      - address: {BACKEND_A}
        labels: {{ app: server, security.istio.io/tlsMode: istio }}
"
            ),
        )
        .expect("mesh");
        std::fs::write(
            self.path("tokens"),
            "tok-client test client\ntok-server test server\n",
        )
        .expect("tokens");
        std::fs::write(self.path("server.py"), XFCC_SERVER).expect("server script");
    }

    async fn sextant_ready(&self) {
        let ns = self.ns.app.clone();
        until("Sextant", Duration::from_secs(30), || {
            let ns = ns.clone();
            async move {
                run_in(
                    &ns,
                    &["curl", "-sf", "http://127.0.0.1:15014/healthz/ready"],
                )
                .await
                .0
            }
        })
        .await;
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_sextant(&mut self, extra: &[&str]) {
        stop(self.sextant.take());
        let p = |n: &str| self.path(n).display().to_string();
        let mut cmd = vec![
            SEXTANT.to_owned(),
            "--file".into(),
            p("mesh.yaml"),
            "--xds-addr".into(),
            "127.0.0.1:15010".into(),
            "--admin-addr".into(),
            "127.0.0.1:15014".into(),
            // Inside the test's own namespace: the other pod dials it.
            "--xds-tls-addr".into(),
            format!("{APP_IP}:15012"),
            "--ca-dir".into(),
            p("ca"),
            "--ca-server-names".into(),
            format!("{APP_IP},127.0.0.1"),
            "--xds-token-file".into(),
            p("tokens"),
        ];
        cmd.extend(extra.iter().map(|s| (*s).to_owned()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.sextant = Some(Namespaces::spawn(
            &self.ns.app,
            &self.path("sextant.log"),
            &cmd,
        ));
    }

    /// `sextant iptables`, then the agent of pod `name` (service account
    /// `name`) at `ip` in `ns`, capturing inbound `port` only.
    async fn start_pod(&mut self, ns: &str, name: &str, ip: &str, port: &str) {
        self.start_pod_with(ns, name, ip, port, &[]).await;
    }

    /// As [`MeshPods::start_pod`], with more of the agent's environment
    /// (`K=V`).
    async fn start_pod_with(&mut self, ns: &str, name: &str, ip: &str, port: &str, env: &[String]) {
        let (ok, out) = run_in(
            ns,
            &[
                SEXTANT,
                "iptables",
                "--proxy-uid",
                "0",
                "--include-inbound-ports",
                port,
            ],
        )
        .await;
        assert!(ok, "sextant iptables in {name}: {out}");
        let dir = self.path(name);
        std::fs::create_dir_all(dir.join("podinfo")).expect("mkdir");
        std::fs::write(dir.join("podinfo/labels"), format!("app=\"{name}\"\n")).expect("labels");
        std::fs::write(dir.join("token"), format!("tok-{name}")).expect("token");
        let d = |n: &str| dir.join(n).display().to_string();
        let mut agent = vec!["env".to_owned()];
        agent.extend(env.iter().cloned());
        agent.extend([
            format!("POD_NAME={name}-1"),
            "POD_NAMESPACE=test".to_owned(),
            format!("INSTANCE_IP={ip}"),
            format!("SERVICE_ACCOUNT={name}"),
            SEXTANT.to_owned(),
            "agent".to_owned(),
            "--xds-addr".to_owned(),
            format!("{APP_IP}:15012"),
            "--xds-ca".to_owned(),
            self.path("ca").join("root-cert.pem").display().to_string(),
            "--token-file".to_owned(),
            d("token"),
            "--envoy-path".to_owned(),
            envoy_path().display().to_string(),
            "--envoy-admin-port".to_owned(),
            "15000".to_owned(),
            // Reachable from outside the pod (the kubelet's probes); not
            // captured (only the given inbound ports are).
            "--status-addr".to_owned(),
            "0.0.0.0:15021".to_owned(),
            "--proxy-dir".to_owned(),
            d("proxy"),
            "--pod-info-dir".to_owned(),
            d("podinfo"),
            "--mode".to_owned(),
            "capture".to_owned(),
            "--concurrency".to_owned(),
            "1".to_owned(),
        ]);
        let agent: Vec<&str> = agent.iter().map(String::as_str).collect();
        let log = self.path(&format!("agent-{name}.log"));
        self.children.push(Namespaces::spawn(ns, &log, &agent));
        let (ok, _) = tokio::time::timeout(
            Duration::from_secs(60),
            run_in(
                ns,
                &[SEXTANT, "agent", "wait", "--status-addr", "127.0.0.1:15021"],
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("agent wait in {name} did not return:\n{}", self.logs()));
        assert!(ok, "the {name} agent is not ready:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        [
            "sextant.log",
            "agent-client.log",
            "agent-server.log",
            "server.log",
        ]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(self.path(f)).unwrap_or_default()
            )
        })
        .collect()
    }
}

/// Mutual TLS between two sidecars, for real: a client pod and a server
/// pod in their own network namespaces, each with `sextant iptables` and
/// `sextant agent` (its certificate from Sextant's CA, served to its Envoy
/// over SDS). The client application's plain HTTP request to the server's
/// virtual IP crosses the network in mutual TLS: the server application
/// receives the client's SPIFFE id from its proxy (and not the one the
/// client forged). PERMISSIVE (the default) still lets a client without a
/// sidecar in; a PeerAuthentication making the server's workload STRICT,
/// added to the registry file, refuses it (the mesh client goes on); one
/// more setting its port to DISABLE lets it in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_talk_mutual_tls_and_strict_refuses_plaintext() {
    let mut m = MeshPods::new(&[]).await;
    let (client_ns, server_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    // The server pod's probes as injection rewrites them: the kubelet asks
    // the agent, which asks the application on loopback.
    let probes = injected_probes(&m).await;
    m.start_pod_with(
        &server_ns,
        "server",
        BACKEND_A,
        "8090,9000",
        &[format!("SEXTANT_APP_PROBES={probes}")],
    )
    .await;
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;

    // The client application speaks plain HTTP to the virtual IP, and
    // forges an identity header: the server gets the real one.
    let forged = "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/test/sa/admin";
    let (ok, body) = app_curl(&client_ns, &["-H", forged, "http://10.96.0.10/"]).await;
    assert!(
        ok && body.contains("URI=spiffe://cluster.local/ns/test/sa/client")
            && !body.contains("sa/admin"),
        "through mutual TLS, the client's identity: {body:?}\n{}",
        m.logs()
    );
    assert!(
        stat(&server_ns, "listener.0.0.0.0_15006.ssl.handshake").await >= 1,
        "the server's sidecar terminated TLS"
    );
    // A client without a sidecar (root is outside capture here) reaches
    // the server in plaintext under PERMISSIVE, with no identity.
    let plaintext = format!("http://{BACKEND_A}:8090/");
    let (ok, body) = run_in(&client_ns, &["curl", "-s", "-m", "5", &plaintext]).await;
    assert!(
        ok && body.trim() == "xfcc=",
        "permissive plaintext: {body:?}\n{}",
        m.logs()
    );

    // A PeerAuthentication for the server's workload, added to the file
    // Sextant reads: STRICT at the server's sidecar, no restart. Plaintext
    // is refused there; the mesh client goes on.
    let mesh = std::fs::read_to_string(m.path("mesh.yaml")).expect("mesh");
    let strict = "peerAuthentications:
  - name: server
    namespace: test
    selector: { matchLabels: { app: server } }
    mtls: { mode: STRICT }
";
    let modified = stat(&server_ns, "listener_manager.listener_modified").await;
    std::fs::write(m.path("mesh.yaml"), format!("{mesh}{strict}")).expect("write");
    // In force once the server's sidecar has taken the new inbound
    // listener (new connections get it; the old one drains its own).
    let took = until("the STRICT layout", Duration::from_secs(30), || {
        let ns = server_ns.clone();
        async move { stat(&ns, "listener_manager.listener_modified").await > modified }
    })
    .await;
    eprintln!("STRICT reached the server's sidecar {took:?} after the file changed");
    let (ok, body) = run_in(&client_ns, &["curl", "-s", "-m", "5", &plaintext]).await;
    assert!(
        !ok,
        "plaintext under STRICT was served: {body:?}\n{}",
        m.logs()
    );
    let (ok, body) = app_curl(&client_ns, &["http://10.96.0.10/"]).await;
    assert!(
        ok && body.contains("URI=spiffe://cluster.local/ns/test/sa/client"),
        "the mesh client under STRICT: {body:?}\n{}",
        m.logs()
    );
    // The kubelet (from outside the mesh, as root here) probes through the
    // agent: each probe answers as the application does, though its port
    // now takes mutual TLS only.
    for (probe, want) in [("readyz", "200"), ("livez", "500"), ("startupz", "200")] {
        let url = format!("http://{BACKEND_A}:15021/app-health/app/{probe}");
        let (_, code) = run_in(
            &client_ns,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                &url,
            ],
        )
        .await;
        assert_eq!(code, want, "{probe} under STRICT\n{}", m.logs());
    }

    // The port opened again for plaintext, the rest of the workload STRICT:
    // the port's own mode wins.
    let modified = stat(&server_ns, "listener_manager.listener_modified").await;
    let port_disabled = strict.replace(
        "    mtls: { mode: STRICT }\n",
        "    mtls: { mode: STRICT }\n    portLevelMtls: { 8090: { mode: DISABLE } }\n",
    );
    std::fs::write(m.path("mesh.yaml"), format!("{mesh}{port_disabled}")).expect("write");
    until("the port's own mode", Duration::from_secs(30), || {
        let ns = server_ns.clone();
        async move { stat(&ns, "listener_manager.listener_modified").await > modified }
    })
    .await;
    let (ok, body) = run_in(&client_ns, &["curl", "-s", "-m", "5", &plaintext]).await;
    assert!(
        ok && body.trim() == "xfcc=",
        "port-level DISABLE: {body:?}\n{}",
        m.logs()
    );
    // And the mesh client's sidecar, which sees the server's tlsMode label,
    // dials that port in plaintext now (a DISABLE port cannot answer mutual
    // TLS): served, without an identity.
    let (ok, body) = until_ok(|| app_curl(&client_ns, &["http://10.96.0.10/"])).await;
    assert!(
        ok && body.trim() == "xfcc=",
        "the mesh client to a DISABLE port: {body:?}\n{}",
        m.logs()
    );
}

/// Retries `call` for up to 10 s until it succeeds (a change that reaches
/// two sidecars, one after the other); its last outcome.
async fn until_ok<F, Fut>(mut call: F) -> (bool, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let started = Instant::now();
    loop {
        let (ok, body) = call().await;
        if ok || started.elapsed() > Duration::from_secs(10) {
            return (ok, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `sextant inject -f` hands the agent for a pod whose application
/// is probed on HTTP (readiness `/` on the named port 8090, liveness
/// `/sick`, which answers 500) and TCP (startup, port 9000), after checking
/// that the pod's probes now point at the agent.
async fn injected_probes(m: &MeshPods) -> String {
    let pod = "apiVersion: v1
kind: Pod
metadata: { name: server-1, namespace: test }
spec:
  containers:
    - name: app
      image: app:1
      ports: [{ name: http, containerPort: 8090 }]
      readinessProbe: { httpGet: { path: /, port: http } }
      livenessProbe: { httpGet: { path: /sick, port: 8090 }, periodSeconds: 5 }
      startupProbe: { tcpSocket: { port: 9000 } }
";
    std::fs::write(m.path("pod.yaml"), pod).expect("write");
    let out = Command::new(SEXTANT)
        .args(["inject", "--native-sidecars", "never", "-f"])
        .arg(m.path("pod.yaml"))
        .output()
        .await
        .expect("sextant inject");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected: serde_json::Value =
        serde_yaml_ng::from_slice(&out.stdout).expect("the injected pod");
    let containers = &injected["spec"]["containers"];
    let app = &containers[1];
    assert_eq!(app["name"], "app");
    for (field, kind) in [
        ("readinessProbe", "readyz"),
        ("livenessProbe", "livez"),
        ("startupProbe", "startupz"),
    ] {
        assert_eq!(
            app[field]["httpGet"]["path"],
            format!("/app-health/app/{kind}"),
            "{injected}"
        );
        assert_eq!(app[field]["httpGet"]["port"], 15021);
    }
    assert_eq!(app["livenessProbe"]["periodSeconds"], 5, "timing kept");
    containers[0]["env"]
        .as_array()
        .expect("the proxy's env")
        .iter()
        .find(|e| e["name"] == "SEXTANT_APP_PROBES")
        .and_then(|e| e["value"].as_str())
        .expect("SEXTANT_APP_PROBES")
        .to_owned()
}

/// The end of the validity of the first certificate in the PEM file at
/// `path`, in seconds since the epoch.
fn not_after(path: &Path) -> f64 {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::*;
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("a certificate");
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("x509");
    cert.validity().not_after.timestamp() as f64
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Certificates that live a minute, under steady traffic: every probe (one
/// every 200 ms) is a new TCP connection through both sidecars, so a new
/// mutual TLS handshake with whatever certificates the agents hold then.
/// For 100 s both agents renew about every 30 s: not one probe may fail.
/// Then Sextant stops for longer than a renewal period: the agents fail to
/// renew and keep their certificates, and traffic goes on until the first
/// of them expires; past that point, with no CA, handshakes fail (which is
/// what a certificate's lifetime means). Sextant starts again: the agents,
/// asking at least every second once expired, renew, and traffic recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minute_long_certificates_rotate_under_steady_traffic_without_a_failure() {
    let mut m = MeshPods::new(&["--workload-cert-ttl", "1m"]).await;
    let (client_ns, server_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    m.start_pod(&server_ns, "server", BACKEND_A, "8090,9000")
        .await;
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;
    let started = Instant::now();
    // Each probe's outcome and when (seconds since the epoch).
    let probe = r#"end=$((SECONDS+170))
while [ $SECONDS -lt $end ]; do
  r=$(timeout 3 bash -c 'exec 3<>/dev/tcp/10.96.0.11/9000; printf ping >&3; head -c 9 <&3' 2>/dev/null)
  if [ "$r" = "echo:ping" ]; then echo "ok $(date +%s.%N)"; else echo "fail $(date +%s.%N)"; fi
  sleep 0.2
done"#;
    let mut cmd: Vec<&str> = vec!["ip", "netns", "exec", &client_ns];
    cmd.extend(APP_USER);
    cmd.extend(["bash", "-c", probe]);
    let traffic = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the traffic");
    tokio::time::sleep(Duration::from_secs(100).saturating_sub(started.elapsed())).await;
    // The CA goes away.
    m.sextant = None;
    let stopped = now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let certs = |pod: &str| m.path(pod).join("proxy/certs/cert-chain.pem");
    let expiry = not_after(&certs("client")).min(not_after(&certs("server")));
    // Until the first certificate has expired, and some: longer than a
    // renewal period in any case (the certificates held are at most 36 s
    // old, so they live at least 24 s more).
    let back_at = expiry + 5.0;
    tokio::time::sleep(Duration::from_secs_f64((back_at - now()).max(0.0))).await;
    m.start_sextant(&["--workload-cert-ttl", "1m"]);
    let restarted = now();
    m.sextant_ready().await;
    let out = tokio::time::timeout(Duration::from_secs(120), traffic.wait_with_output())
        .await
        .expect("the traffic ends")
        .expect("traffic");
    let probes: Vec<(bool, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (outcome, at) = l.split_once(' ')?;
            Some((outcome == "ok", at.parse().ok()?))
        })
        .collect();
    let count = |from: f64, to: f64, ok: bool| {
        probes
            .iter()
            .filter(|(o, at)| *o == ok && *at >= from && *at < to)
            .count()
    };
    let t0 = probes.first().map_or(0.0, |p| p.1);
    let recovered = probes
        .iter()
        .find(|(o, at)| *o && *at >= restarted)
        .map_or(f64::NAN, |p| p.1);
    let received = |pod: &str| {
        std::fs::read_to_string(m.path(&format!("agent-{pod}.log")))
            .unwrap_or_default()
            .matches("workload certificate received")
            .count()
    };
    eprintln!(
        "before the outage: {} ok, {} failed; CA away {:.1} s, first expiry {:.1} s in: {} ok, {} failed before it, {} failed after; recovered {:.1} s after the CA restarted; afterwards {} ok, {} failed; certificates received: client {}, server {}",
        count(t0, stopped, true),
        count(t0, stopped, false),
        restarted - stopped,
        expiry - stopped,
        count(stopped, expiry, true),
        count(stopped, expiry, false),
        count(expiry, restarted + 60.0, false),
        recovered - restarted,
        count(recovered, f64::MAX, true),
        count(recovered, f64::MAX, false),
        received("client"),
        received("server"),
    );
    // About 5 a second when the machine is idle; fewer when it is busy (each
    // probe is a bash, a connection and a sleep).
    assert!(count(t0, stopped, true) > 250, "too few probes ran");
    assert_eq!(
        count(t0, stopped, false),
        0,
        "probes failed across rotations:\n{}",
        m.logs()
    );
    assert_eq!(
        count(stopped, expiry - 0.5, false),
        0,
        "probes failed while the certificates held were valid:\n{}",
        m.logs()
    );
    assert!(
        recovered - restarted < 10.0,
        "traffic recovered {:.1} s after the CA came back:\n{}",
        recovered - restarted,
        m.logs()
    );
    assert_eq!(
        count(recovered, f64::MAX, false),
        0,
        "failures after recovery"
    );
    assert!(
        count(recovered, f64::MAX, true) > 20,
        "too little traffic after recovery"
    );
    for pod in ["client", "server"] {
        // The first and at least two renewals before the outage, one after.
        assert!(
            received(pod) >= 4,
            "{pod} renewed too seldom:\n{}",
            m.logs()
        );
    }
    let handshakes = stat(&server_ns, "listener.0.0.0.0_15006.ssl.handshake").await;
    let resumed = stat(&server_ns, "listener.0.0.0.0_15006.ssl.session_reused").await;
    eprintln!(
        "the server's sidecar: {handshakes} handshakes, {resumed} of them resumed sessions (each rotation starts full handshakes again)"
    );
    let ok = probes.iter().filter(|p| p.0).count() as u64;
    assert!(
        handshakes >= ok,
        "each probe was its own handshake: {handshakes} handshakes for {ok} probes"
    );
}

/// Writes `extra` after the mesh file's services and waits until the
/// server's sidecar has taken the inbound listener that follows from it.
async fn apply_rules(m: &MeshPods, mesh: &str, extra: &str) {
    let server_ns = m.ns.backends.clone();
    let modified = stat(&server_ns, "listener_manager.listener_modified").await;
    std::fs::write(m.path("mesh.yaml"), format!("{mesh}{extra}")).expect("write");
    until("the new inbound listener", Duration::from_secs(30), || {
        let ns = server_ns.clone();
        async move { stat(&ns, "listener_manager.listener_modified").await > modified }
    })
    .await;
}

/// The HTTP status a request gets: through the client's sidecar as the
/// application (`mesh`), or straight from outside the mesh.
async fn status_of(m: &MeshPods, path: &str, mesh: bool) -> String {
    let args = ["-o", "/dev/null", "-w", "%{http_code}"];
    let (_, code) = if mesh {
        let url = format!("http://10.96.0.10{path}");
        let mut a = args.to_vec();
        a.push(&url);
        app_curl(&m.ns.app, &a).await
    } else {
        let url = format!("http://{BACKEND_A}:8090{path}");
        let mut cmd = vec!["curl", "-s", "-m", "5"];
        cmd.extend(args);
        cmd.push(&url);
        run_in(&m.ns.app, &cmd).await
    };
    code
}

/// Requests `path` until the answer is `want`, then three more that must
/// all be `want`. A connection the client's sidecar opened before a policy
/// changed still runs the old inbound chain for one more request, which
/// asks it to close (Envoy drains a replaced filter chain's connections):
/// at most one request per open connection may be answered the old way.
async fn settles(m: &MeshPods, path: &str, mesh: bool, want: &str) {
    let mut old = Vec::new();
    loop {
        let code = status_of(m, path, mesh).await;
        if code == want {
            break;
        }
        old.push(code);
        assert!(
            old.len() <= 2,
            "{path}: still {old:?}, not {want}\n{}",
            m.logs()
        );
    }
    for _ in 0..3 {
        assert_eq!(
            status_of(m, path, mesh).await,
            want,
            "{path}: settled, then not"
        );
    }
    if !old.is_empty() {
        eprintln!(
            "{path}: {} request(s) answered under the previous policy",
            old.len()
        );
    }
}

/// AuthorizationPolicy at the server's sidecar, with real requests: a DENY
/// of namespace `test` on `/private*` answers the mesh client (of `test`,
/// proven by its certificate) 403 there and 200 elsewhere, and lets a
/// client outside the mesh (no identity, so no namespace) through; an
/// ALLOW of the client's identity alone then lets the mesh client in and
/// refuses the client outside the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_policy_refuses_a_namespace_and_allows_an_identity() {
    let mut m = MeshPods::new(&[]).await;
    let (client_ns, server_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    m.start_pod(&server_ns, "server", BACKEND_A, "8090,9000")
        .await;
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;
    let mesh = std::fs::read_to_string(m.path("mesh.yaml")).expect("mesh");
    assert_eq!(status_of(&m, "/private", true).await, "200");

    apply_rules(
        &m,
        &mesh,
        "authorizationPolicies:
  - name: no-test-private
    namespace: test
    selector: { matchLabels: { app: server } }
    action: DENY
    rules:
      - from: [{ source: { namespaces: [test] } }]
        to: [{ operation: { paths: [\"/private*\"] } }]
",
    )
    .await;
    settles(&m, "/private/x", true, "403").await;
    assert_eq!(status_of(&m, "/public", true).await, "200");
    assert_eq!(
        status_of(&m, "/private/x", false).await,
        "200",
        "no identity, no namespace"
    );

    apply_rules(
        &m,
        &mesh,
        "authorizationPolicies:
  - name: only-client
    namespace: test
    selector: { matchLabels: { app: server } }
    rules:
      - from: [{ source: { principals: [cluster.local/ns/test/sa/client] } }]
",
    )
    .await;
    settles(&m, "/private/x", true, "200").await;
    settles(&m, "/", false, "403").await;
}

#[path = "capture/vm.rs"]
mod vm;

#[path = "capture/ingress.rs"]
mod ingress;

#[path = "capture/identity.rs"]
mod identity;
