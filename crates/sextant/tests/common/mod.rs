//! Running the real `sextant` binary in tests.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sextant_testkit::peers::{HttpBackend, free_port, http_get};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_sextant");

pub struct Sextant {
    pub child: Child,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    log: PathBuf,
    /// Every argument, to start it again the same way.
    args: Vec<String>,
    nofile: Option<u64>,
}

impl Sextant {
    pub async fn start(dir: &Path, extra: &[&str]) -> Sextant {
        Sextant::start_with_nofile(dir, extra, None).await
    }

    /// Starts it with its open-file limit set to `nofile` (through the
    /// shell's `ulimit -n`), when given.
    pub async fn start_with_nofile(dir: &Path, extra: &[&str], nofile: Option<u64>) -> Sextant {
        let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        // A caller may choose the xDS address (a proxy started before
        // Sextant needs to know it).
        let chosen_xds: Option<SocketAddr> = extra
            .iter()
            .position(|a| *a == "--xds-addr")
            .and_then(|i| extra.get(i + 1))
            .map(|a| a.parse().expect("--xds-addr"));
        let (xds, admin) = (chosen_xds.unwrap_or_else(|| port(0)), port(1));
        // Replicas must hand proxies the same listener: a caller may choose it.
        let chosen = extra
            .iter()
            .position(|a| *a == "--outbound-addr")
            .and_then(|i| extra.get(i + 1))
            .map(|a| a.parse().expect("--outbound-addr"));
        let outbound = chosen.unwrap_or_else(|| port(2));
        // One log per instance: a test may run several in one directory.
        let log = dir.join(format!("sextant-{}.log", xds.port()));
        let mut args: Vec<String> = [
            "--admin-addr",
            &admin.to_string(),
            "--debounce-config",
            "10ms",
            "--drain-timeout",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if chosen_xds.is_none() {
            args.extend(["--xds-addr".to_owned(), xds.to_string()]);
        }
        if chosen.is_none() {
            args.extend(["--outbound-addr".to_owned(), outbound.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn(&args, nofile, &log);
        let mut s = Sextant {
            child,
            xds,
            admin,
            outbound,
            log,
            args,
            nofile,
        };
        s.wait_ready().await;
        s
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sextant exited ({status}) before becoming ready:\n{}",
                    self.log()
                );
            }
            if let Ok((200, _)) = http_get(self.admin, "localhost", "/healthz/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sextant never became ready:\n{}", self.log());
    }

    /// `kill -9`: no drain, no goodbye to the proxies.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// Starts it again, on the same ports with the same arguments.
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        self.child = spawn(&self.args, self.nofile, &self.log);
        self.wait_ready().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, "localhost", path)
            .await
            .expect("admin request")
    }

    /// The first registry's first problem on /debug/registryz, once there
    /// is one (empty if none shows within 5 s).
    pub async fn first_problem(&self) -> String {
        for _ in 0..100 {
            let r = self.json("/debug/registryz").await;
            if let Some(p) = r["registries"][0]["problems"][0]["message"].as_str() {
                return p.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        String::new()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("json")
    }
}

/// Runs the binary with `args`, its stderr appended to `log`.
fn spawn(args: &[String], nofile: Option<u64>, log: &Path) -> Child {
    let mut command = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start sextant")
}

pub fn mesh(backends: &[&HttpBackend]) -> String {
    let mut s = String::from(
        "services:\n  - hostname: web.test.svc\n    ports: [{ name: http, port: 8080 }]\n    endpoints:\n",
    );
    for b in backends {
        s.push_str(&format!(
            "      - {{ address: 127.0.0.1, ports: {{ http: {} }} }}\n",
            b.addr.port()
        ));
    }
    s
}

pub use sextant_testkit::peers::bodies_until as bodies;

pub async fn bootstrap(xds: SocketAddr, node: &str, delta: bool) -> String {
    bootstrap_for(&[xds], node, delta).await
}

/// `sextant bootstrap` with one `--xds-addr` per replica.
pub async fn bootstrap_for(replicas: &[SocketAddr], node: &str, delta: bool) -> String {
    let delta: &[&str] = if delta { &["--delta"] } else { &[] };
    bootstrap_with(replicas, node, delta).await
}

/// `sextant bootstrap` with one `--xds-addr` per replica and `extra`
/// arguments (`--namespace NS`...).
pub async fn bootstrap_with(replicas: &[SocketAddr], node: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["bootstrap", "--node-id", node, "--admin-port", "0"]);
    for xds in replicas {
        cmd.args(["--xds-addr", &xds.to_string()]);
    }
    cmd.args(extra);
    let out = cmd.output().await.expect("sextant bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A real Envoy as the router of gateway `gateway` (`NAMESPACE/NAME`),
/// node `node`, its listeners bound on 127.0.0.1, `extra` bootstrap
/// arguments (`--gateway-port-offset N`...); live when returned.
pub async fn router_envoy(
    xds: SocketAddr,
    node: &str,
    gateway: &str,
    extra: &[&str],
) -> sextant_testkit::peers::Envoy {
    let mut args = vec![
        "--mode",
        "router",
        "--gateway",
        gateway,
        "--gateway-bind",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let bootstrap = bootstrap_with(&[xds], node, &args).await;
    let envoy = sextant_testkit::peers::Envoy::start(&bootstrap).await;
    envoy.wait_live().await;
    envoy
}

/// A certificate rotation under load: curl asks `name` at
/// 127.0.0.1:`port` without pause, trusting `both` (the old and the new
/// CA), while `rotate` runs, until a certificate of `new_ca` is served (10 s
/// bound; `context` says more when not). No request may fail, and enough
/// must have run to tell. Returns how long after `rotate` the new
/// certificate was served, and how many requests ran.
pub async fn rotation_under_load(
    name: &str,
    port: u16,
    both: &Path,
    new_ca: &Path,
    want: &str,
    rotate: impl std::future::Future<Output = ()>,
    context: impl Fn() -> String,
) -> (Duration, usize) {
    use sextant_testkit::certs::curl_https;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let running = {
        let (stop, both) = (stop.clone(), both.to_owned());
        let (name, want) = (name.to_owned(), want.to_owned());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match curl_https(&name, port, &both).await {
                    Ok(body) if body == want => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotate.await;
    let started = tokio::time::Instant::now();
    while curl_https(name, port, new_ca).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the rotated certificate is not served\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = running.await.expect("requests");
    eprintln!("{ok} requests during the rotation, {} failed", failed.len());
    assert!(ok > 5, "too few requests to tell: {ok}");
    assert!(failed.is_empty(), "{failed:?}");
    (took, ok)
}

/// Polls until 10 requests in a row for `host` at `addr` answer `want`
/// (status, and a body starting so) (10 s bound); how long that took.
pub async fn settles(addr: SocketAddr, host: &str, path: &str, want: (u16, &str)) -> Duration {
    let started = tokio::time::Instant::now();
    let mut in_a_row = 0;
    let mut last = (0, String::new());
    while in_a_row < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{host}{path} never settled on {want:?}: last {last:?}"
        );
        last = http_get(addr, host, path)
            .await
            .unwrap_or((0, String::new()));
        let hit = last.0 == want.0 && last.1.starts_with(want.1);
        in_a_row = if hit { in_a_row + 1 } else { 0 };
        if !hit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// Polls `host` with `headers` until its body is `want` (bounded, 5 s);
/// true if it was.
pub async fn until_body(
    outbound: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    want: &str,
) -> bool {
    for _ in 0..200 {
        if let Ok(r) = sextant_testkit::peers::http_request(outbound, host, "/", headers).await
            && r.body == want
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// How many of `n` requests to `host` with `headers` answered with body
/// `want` (every answer must be 200).
pub async fn count_body(
    outbound: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
    want: &str,
) -> usize {
    let mut hits = 0;
    for _ in 0..n {
        let r = sextant_testkit::peers::http_request(outbound, host, "/", headers)
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        hits += usize::from(r.body == want);
    }
    hits
}

/// How many of `n` requests to `host` each body answered (every answer
/// must be 200).
pub async fn tally(
    outbound: SocketAddr,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = sextant_testkit::peers::http_request(outbound, host, "/", &[])
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        *out.entry(r.body).or_default() += 1;
    }
    out
}

/// How long until ten requests in a row to `host` all answer `want`
/// (`None` after `bound`).
pub async fn until_all(
    outbound: SocketAddr,
    host: &str,
    want: &str,
    bound: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        let mut n = 0;
        for _ in 0..10 {
            n += usize::from(
                http_get(outbound, host, "/")
                    .await
                    .is_ok_and(|(_, b)| b == want),
            );
        }
        if n == 10 {
            return Some(started.elapsed());
        }
    }
    None
}

/// Asserts that requests to `host` with `headers` come to answer `want`:
/// ten in a row within a bounded wait (one success could be the default
/// route answering by chance), then 20 more in a row.
pub async fn assert_routes_to(sx: &Sextant, host: &str, headers: &[(&str, &str)], want: &str) {
    let started = std::time::Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{headers:?} did not come to reach {want} within 10 s\n{}",
            sx.log()
        );
        let ok = sextant_testkit::peers::http_request(sx.outbound, host, "/", headers)
            .await
            .is_ok_and(|r| r.body == want);
        in_a_row = if ok { in_a_row + 1 } else { 0 };
        if !ok {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    assert_eq!(
        count_body(sx.outbound, host, headers, 20, want).await,
        20,
        "{headers:?} must always reach {want}"
    );
}

/// `/metrics` read by the Prometheus project's own OpenMetrics parser
/// (Python `prometheus_client`, strict: a malformed line, a family named
/// twice or a missing `# EOF` fails here): each family's name, type and
/// samples (`name`, `labels`, `value`).
#[allow(dead_code)]
pub async fn openmetrics(text: &str) -> Vec<serde_json::Value> {
    use tokio::io::AsyncWriteExt as _;
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "samples": [
        {"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;
    let mut child = tokio::process::Command::new(sextant_testkit::peers::python_path())
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("write");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the parser hangs")
        .expect("python");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejects /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}
