//! A VM joins the mesh by itself: the "backends" network namespace stands
//! in for a machine outside Kubernetes running its application and
//! `sextant agent --workload-group`. The agent registers a WorkloadEntry
//! from the group (Istio's auto-registration) over its own authenticated
//! stream; a ServiceEntry selecting the group's label sends a sidecar's
//! traffic to it; the group's probe failing takes it out and passing
//! brings it back; the agent killed, the entry stays for the grace period
//! and then leaves.
//!
//! A module of the `capture` test (its namespaces and pods).

use super::*;

/// The VM's application: `/healthz` answers 200 while the flag file
/// exists, 503 otherwise; every other path answers `vm-cart`.
const VM_APP: &str = r#"
import http.server, os, sys
port, flag = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            code = 200 if os.path.exists(flag) else 503
            body = b"ok\n" if code == 200 else b"down\n"
        else:
            code, body = 200, b"vm-cart\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"#;

/// The service and the group, added to the mesh file.
const CART: &str = "serviceEntries:
  - name: cart
    namespace: test
    hosts: [cart.vm.test]
    addresses: [10.96.0.30]
    location: MESH_INTERNAL
    resolution: STATIC
    ports: [{ number: 80, name: http, protocol: HTTP }]
    workloadSelector: { labels: { app: cart } }
workloadGroups:
  - name: cart
    namespace: test
    metadata: { labels: { app: cart } }
    template: { ports: { http: 8091 }, serviceAccount: server }
";

/// The group as the VM's operator has it: Istio's manifest.
const GROUP_MANIFEST: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: { name: cart, namespace: test }
spec:
  metadata: { labels: { app: cart } }
  template: { ports: { http: 8091 }, serviceAccount: server }
  probe: { httpGet: { port: 8091, path: /healthz }, periodSeconds: 1, failureThreshold: 1 }
";

/// Kills the VM's Envoy however the test ends.
struct VmEnvoy(String);

impl Drop for VmEnvoy {
    fn drop(&mut self) {
        kill_processes_with_arg(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_registers_from_its_group_reports_health_and_leaves_after_the_grace_period() {
    let mut m = MeshPods::new(&["--workload-entry-grace", "4s"]).await;
    let (client_ns, vm_ns) = (m.ns.app.clone(), m.ns.backends.clone());
    // The group's probe in the control plane's copy too: the entry starts
    // unhealthy until the agent's first passing probe.
    let cart = CART.replace(
        "serviceAccount: server }\n",
        "serviceAccount: server }\n    probe: { httpGet: { port: 8091, path: /healthz } }\n",
    );
    let mesh = std::fs::read_to_string(m.path("mesh.yaml")).expect("mesh");
    std::fs::write(m.path("mesh.yaml"), format!("{mesh}{cart}")).expect("write");
    m.start_pod(&client_ns, "client", APP_IP, "8000").await;

    let dir = m.path("vm");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let flag = dir.join("healthy");
    std::fs::write(&flag, "").expect("flag");
    std::fs::write(dir.join("app.py"), VM_APP).expect("app");
    std::fs::write(dir.join("group.yaml"), GROUP_MANIFEST).expect("group");
    std::fs::write(dir.join("token"), "tok-server").expect("token");
    let d = |n: &str| dir.join(n).display().to_string();
    m.children.push(Namespaces::spawn(
        &vm_ns,
        &dir.join("app.log"),
        &["python3", &d("app.py"), "8091", &d("healthy")],
    ));
    let _envoy = VmEnvoy(dir.join("proxy").join("envoy.yaml").display().to_string());

    // Nothing registered yet: the service has no endpoint.
    let cart = || async { app_curl(&client_ns, &["http://10.96.0.30/"]).await.1 };
    assert_ne!(cart().await, "vm-cart\n");

    let root = m.path("ca").join("root-cert.pem").display().to_string();
    let instance_ip = format!("INSTANCE_IP={BACKEND_B}");
    let agent_cmd = [
        "env",
        &instance_ip,
        "POD_NAME=vm-1",
        SEXTANT,
        "agent",
        "--workload-group",
        &d("group.yaml"),
        "--xds-addr",
        &format!("{APP_IP}:15012"),
        "--xds-ca",
        &root,
        "--token-file",
        &d("token"),
        "--envoy-path",
        &envoy_path().display().to_string(),
        "--proxy-dir",
        &d("proxy"),
        "--pod-info-dir",
        &d("podinfo"),
        "--mode",
        "explicit",
        "--concurrency",
        "1",
    ]
    .map(ToOwned::to_owned);
    let agent_cmd: Vec<&str> = agent_cmd.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut agent = Namespaces::spawn(&vm_ns, &dir.join("agent.log"), &agent_cmd);
    let logs = || {
        format!(
            "{}--- vm agent\n{}",
            m.logs(),
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        )
    };
    let check = |want: &'static str| move || async move { cart().await == want };
    until(
        "the VM serving",
        Duration::from_secs(30),
        check("vm-cart\n"),
    )
    .await;
    eprintln!(
        "the VM's first request through a sidecar {:?} after its agent started",
        started.elapsed()
    );
    let (_, events) = run_in(
        &client_ns,
        &["curl", "-s", "http://127.0.0.1:15014/debug/events"],
    )
    .await;
    assert!(
        events.contains(&format!(
            "registered as WorkloadEntry test/cart-{} from WorkloadGroup test/cart",
            BACKEND_B.replace('.', "-")
        )),
        "{events}\n{}",
        logs()
    );

    // The probe fails: the agent reports it, the endpoint is taken out.
    std::fs::remove_file(&flag).expect("unflag");
    let took = until("the VM out", Duration::from_secs(15), || async {
        cart().await.contains("no healthy upstream")
    })
    .await;
    eprintln!("a failing probe took the VM out after {took:?}");
    // And passes again.
    std::fs::write(&flag, "").expect("flag");
    let took = until("the VM back", Duration::from_secs(15), check("vm-cart\n")).await;
    eprintln!("a passing probe brought the VM back after {took:?}");

    // The agent is killed (its Envoy with it): the entry outlives the
    // stream by the grace period, then leaves.
    let killed = Instant::now();
    agent.start_kill().expect("kill");
    let _ = agent.wait().await;
    drop(_envoy);
    assert_eq!(
        cart().await,
        "vm-cart\n",
        "within the grace period the entry stays (the application still answers)"
    );
    until("the entry gone", Duration::from_secs(20), || async {
        let body = cart().await;
        body.contains("no healthy upstream") || body.is_empty()
    })
    .await;
    let gone = killed.elapsed();
    eprintln!("the entry left {gone:?} after the agent was killed (grace 4 s)");
    assert!(
        gone >= Duration::from_secs(4),
        "left before the grace period: {gone:?}\n{}",
        logs()
    );
    let (_, events) = run_in(
        &client_ns,
        &["curl", "-s", "http://127.0.0.1:15014/debug/events"],
    )
    .await;
    assert!(events.contains("leaves after the grace period"), "{events}");
}
