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
        let status = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pod = dir.join("pod");
        std::fs::create_dir_all(&pod).expect("mkdir");
        std::fs::write(pod.join("labels"), "app=\"web\"\nversion=\"v1\"\n").expect("labels");
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
            .args(["--mode", "explicit", "--drain-deadline", deadline])
            .args(["--proxy-log-level", "info"])
            .env("POD_NAME", "web-1")
            .env("POD_NAMESPACE", "shop")
            .env("INSTANCE_IP", "127.0.0.1")
            .env("SERVICE_ACCOUNT", "web")
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
