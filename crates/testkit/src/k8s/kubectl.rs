//! Running kubectl against the double: the independent client that checks
//! it, and how end-to-end tests apply objects as users do.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::KubeDouble;

/// kubectl from PATH; scripts/install-peers.sh installs it where missing.
fn kubectl() -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p.display().to_string(),
        None => panic!(
            "kubectl not found on PATH: run scripts/install-peers.sh (installs Debian's kubernetes-client)"
        ),
    }
}

/// kubectl pointed at a double, with its own kubeconfig and HOME.
pub struct Kubectl {
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    /// A kubectl for `double`.
    pub fn new(double: &KubeDouble) -> Kubectl {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = double.kubeconfig(dir.path(), "double");
        Kubectl {
            kubeconfig,
            _dir: dir,
        }
    }

    /// A kubectl command with `args`, killed when dropped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl());
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "20s"])
            .args(args)
            .env("HOME", self._dir.path())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubectl apply --validate=false -f FILE` (the double keeps no
    /// OpenAPI schema), asserting success.
    pub async fn apply(&self, file: &str) {
        let (ok, out, err) = self.run(&["apply", "--validate=false", "-f", file]).await;
        assert!(ok, "kubectl apply -f {file}: {out}{err}");
    }

    /// Runs kubectl, asserts success, and parses its JSON output.
    pub async fn json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?} printed {out}: {e}"))
    }
}
