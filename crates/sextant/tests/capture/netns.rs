//! The capture tests' harness: the network namespaces they create and
//! run commands in, and how they look at what happened there.
//!
//! A module of the `capture` test.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub(super) const SEXTANT: &str = env!("CARGO_BIN_EXE_sextant");
/// The app pod's address, the two backends', and the services' virtual IPs.
pub(super) const APP_IP: &str = "10.250.0.1";
pub(super) const BACKEND_A: &str = "10.250.0.2";
pub(super) const BACKEND_B: &str = "10.250.0.3";
/// The unprivileged user the application runs as (the proxy is root here,
/// exempt from capture by `--proxy-uid 0`).
pub(super) const APP_USER: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

pub(super) fn require_tools() {
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
pub(super) struct Namespaces {
    pub(super) app: String,
    pub(super) backends: String,
}

pub(super) fn ip(args: &[&str]) {
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
    pub(super) fn new() -> Namespaces {
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
    pub(super) fn spawn(ns: &str, log: &Path, cmd: &[&str]) -> Child {
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
pub(super) async fn run_in(ns: &str, cmd: &[&str]) -> (bool, String) {
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
pub(super) async fn app_curl(ns: &str, args: &[&str]) -> (bool, String) {
    let mut cmd: Vec<&str> = APP_USER.to_vec();
    cmd.extend(["curl", "-s", "-m", "5"]);
    cmd.extend(args);
    run_in(ns, &cmd).await
}

/// Envoy's stat `name` (0 if absent).
pub(super) async fn stat(ns: &str, name: &str) -> u64 {
    let (_, body) = run_in(ns, &["curl", "-s", "http://127.0.0.1:15000/stats"]).await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until `check` holds; how long it took.
pub(super) async fn until<F, Fut>(what: &str, limit: Duration, check: F) -> Duration
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

/// Kills `child` and waits (10 s at most) until it has exited: the next
/// Sextant binds its port, and under load a killed process takes a moment
/// to let it go.
pub(super) fn stop(child: Option<Child>) {
    if let Some(mut old) = child {
        let _ = old.start_kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(old.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The files `names` of `dir`, each under a header: what a failed test
/// prints.
pub(super) fn logs_of(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(dir.join(f)).unwrap_or_default()
            )
        })
        .collect()
}
