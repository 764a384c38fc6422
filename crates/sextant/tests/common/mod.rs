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
}

impl Sextant {
    pub async fn start(dir: &Path, extra: &[&str]) -> Sextant {
        Sextant::start_with_nofile(dir, extra, None).await
    }

    /// Starts it with its open-file limit set to `nofile` (through the
    /// shell's `ulimit -n`), when given.
    pub async fn start_with_nofile(dir: &Path, extra: &[&str], nofile: Option<u64>) -> Sextant {
        let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (xds, admin, outbound) = (port(0), port(1), port(2));
        let log = dir.join("sextant.log");
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
        let child = command
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .args([
                "--outbound-addr",
                &outbound.to_string(),
                "--debounce-config",
                "10ms",
            ])
            .args(["--drain-timeout", "2s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start sextant");
        let mut s = Sextant {
            child,
            xds,
            admin,
            outbound,
            log,
        };
        for _ in 0..200 {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!(
                    "sextant exited ({status}) before becoming ready:\n{}",
                    s.log()
                );
            }
            if let Ok((200, _)) = http_get(s.admin, "localhost", "/healthz/ready").await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sextant never became ready:\n{}", s.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, "localhost", path)
            .await
            .expect("admin request")
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("json")
    }
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
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bootstrap",
        "--node-id",
        node,
        "--xds-addr",
        &xds.to_string(),
        "--admin-port",
        "0",
    ]);
    if delta {
        cmd.arg("--delta");
    }
    let out = cmd.output().await.expect("sextant bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
