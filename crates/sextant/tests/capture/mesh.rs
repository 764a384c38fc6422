//! Two pods with agents and capture, and one Sextant with its CA, in the
//! capture test's network namespaces ([`MeshPods`]); the mutual TLS,
//! certificate rotation and authorization scenarios that use them.
//!
//! A module of the `capture` test.

use super::*;

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
pub(super) struct MeshPods {
    pub(super) ns: Namespaces,
    pub(super) dir: tempfile::TempDir,
    pub(super) children: Vec<Child>,
    pub(super) sextant: Option<Child>,
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
    pub(super) async fn new(sextant_args: &[&str]) -> MeshPods {
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
    pub(super) fn write_files(&self) {
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

    pub(super) async fn sextant_ready(&self) {
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

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn start_sextant(&mut self, extra: &[&str]) {
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
    pub(super) async fn start_pod(&mut self, ns: &str, name: &str, ip: &str, port: &str) {
        self.start_pod_with(ns, name, ip, port, &[]).await;
    }

    /// As [`MeshPods::start_pod`], with more of the agent's environment
    /// (`K=V`).
    pub(super) async fn start_pod_with(
        &mut self,
        ns: &str,
        name: &str,
        ip: &str,
        port: &str,
        env: &[String],
    ) {
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

    pub(super) fn logs(&self) -> String {
        logs_of(
            self.dir.path(),
            &[
                "sextant.log",
                "agent-client.log",
                "agent-server.log",
                "server.log",
            ],
        )
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
    // Both agents ask again every second once their certificate expired,
    // so both hold a new one a few seconds after the CA is back; the first
    // probe that succeeds may come before the second of them (a resumed
    // TLS session), so "recovered" is not yet "both renewed".
    let settled = recovered.max(restarted + 5.0);
    assert_eq!(
        count(settled, f64::MAX, false),
        0,
        "failures once both agents renewed"
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
